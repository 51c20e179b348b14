//! One model of what was found, rendered as a text tree or as JSON.

use serde::Serialize;

/// The outcome of a check.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "status", content = "detail", rename_all = "lowercase")]
pub(crate) enum Status {
    /// Checked and valid.
    Valid(String),
    /// Checked and broken.
    Invalid(String),
    /// Not checkable with what was given.
    Unchecked(String),
    /// Valid, but only under the INSECURE test root.
    Insecure(String),
}

/// A node of the output tree.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Node {
    pub(crate) kind: &'static str,
    pub(crate) title: String,
    pub(crate) fields: serde_json::Map<String, serde_json::Value>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) checks: Vec<Check>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) children: Vec<Node>,
}

/// A named check.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Check {
    pub(crate) what: String,
    #[serde(flatten)]
    pub(crate) status: Status,
}

impl Node {
    pub(crate) fn new(kind: &'static str, title: impl Into<String>) -> Self {
        Self {
            kind,
            title: title.into(),
            fields: serde_json::Map::new(),
            checks: Vec::new(),
            children: Vec::new(),
        }
    }

    pub(crate) fn field(&mut self, k: &str, v: impl Into<serde_json::Value>) -> &mut Self {
        self.fields.insert(k.to_owned(), v.into());
        self
    }

    pub(crate) fn check(&mut self, what: impl Into<String>, status: Status) -> &mut Self {
        self.checks.push(Check {
            what: what.into(),
            status,
        });
        self
    }

    /// All failed checks in the subtree, as "what: detail" lines; a failure already stated by an
    /// enclosing check (its detail contained in an earlier line) is not repeated.
    pub(crate) fn failures(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        self.walk(&mut |n| {
            for c in &n.checks {
                if let Status::Invalid(d) = &c.status
                    && !out.iter().any(|l| l.contains(d.as_str()))
                {
                    out.push(format!("{} ({}): {d}", c.what, n.title));
                }
            }
        });
        out
    }

    /// True when any check in the subtree is insecure.
    pub(crate) fn insecure(&self) -> bool {
        let mut found = false;
        self.walk(&mut |n| {
            found |= n
                .checks
                .iter()
                .any(|c| matches!(c.status, Status::Insecure(_)))
        });
        found
    }

    fn walk(&self, f: &mut dyn FnMut(&Node)) {
        f(self);
        for c in &self.children {
            c.walk(f);
        }
    }

    /// Render as an indented tree.
    pub(crate) fn render(&self, out: &mut String, depth: usize) {
        let pad = "  ".repeat(depth);
        out.push_str(&format!("{pad}● {}: {}\n", self.kind, self.title));
        let width = self
            .fields
            .keys()
            .map(String::len)
            .max()
            .unwrap_or(0)
            .max(10);
        for (k, v) in &self.fields {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            out.push_str(&format!("{pad}  {k:<width$}  {v}\n"));
        }
        for c in &self.checks {
            let (mark, detail) = match &c.status {
                Status::Valid(d) => ("ok", d),
                Status::Invalid(d) => ("FAILED", d),
                Status::Unchecked(d) => ("not checked", d),
                Status::Insecure(d) => ("INSECURE", d),
            };
            out.push_str(&format!("{pad}  [{mark}] {}: {detail}\n", c.what));
        }
        for c in &self.children {
            c.render(out, depth + 1);
        }
    }
}
