//! The AMD SEV-SNP anchor: reports ([`report`]), their verification against AMD's key hierarchy
//! ([`verify`]), and the providers that obtain reports inside a guest ([`provider`]), including the
//! INSECURE software stand-in ([`standin`]) used where no SNP hardware exists.

pub mod derived;
pub mod provider;
pub mod report;
pub mod standin;
pub mod verify;

pub use report::SnpReport;

/// An AMD EPYC product generation with its own ARK/ASK.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Product {
    /// 3rd generation EPYC (Zen 3).
    Milan,
    /// 4th generation EPYC (Zen 4), including Bergamo and Siena.
    Genoa,
    /// 5th generation EPYC (Zen 5).
    Turin,
}

impl Product {
    /// All products, in order.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// AMD's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Milan => "Milan",
            Self::Genoa => "Genoa",
            Self::Turin => "Turin",
        }
    }

    /// Parse a name, case-insensitively ("milan", "Genoa", …).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }

    /// Genuine AMD roots for this product, as published by the AMD KDS: `(ARK, ASK, ASVK)` DER.
    /// Parsed once per process.
    pub fn genuine_roots(self) -> Option<verify::AmdRoots> {
        static PARSED: std::sync::LazyLock<Vec<verify::AmdRoots>> =
            std::sync::LazyLock::new(|| {
                Product::ALL
                    .iter()
                    .filter_map(|p| p.parse_genuine_roots())
                    .collect()
            });
        PARSED.iter().find(|r| r.product == self).cloned()
    }

    fn parse_genuine_roots(self) -> Option<verify::AmdRoots> {
        let pem: &[u8] = match self {
            Self::Milan => include_bytes!("../../roots/amd/milan-ask-ark-asvk.pem"),
            Self::Genoa => include_bytes!("../../roots/amd/genoa-ask-ark-asvk.pem"),
            Self::Turin => include_bytes!("../../roots/amd/turin-ask-ark-asvk.pem"),
        };
        let blocks = pem::parse_many(pem).ok()?;
        // KDS bundle order: ASK, ARK, ASVK.
        let [ask, ark, asvk] = <[pem::Pem; 3]>::try_from(blocks).ok()?;
        Some(verify::AmdRoots {
            product: self,
            ark: ark.into_contents(),
            ask: ask.into_contents(),
            asvk: Some(asvk.into_contents()),
            insecure: false,
        })
    }
}
