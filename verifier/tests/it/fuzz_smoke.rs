//! A short deterministic run of the request-body fuzz target on stable.

#[test]
fn request_bodies_never_panic() {
    let seeds: [&[u8]; 7] = [
        br#"{"vm_id":"vm-a","host_id":"h1","threshold":70,"policy":"name = 1"}"#,
        br#"{"seq":3,"regions":[{"name":"code","leaves":"ab"}]}"#,
        br#"{"code":"replay","message":"x"}"#,
        br#"{"vm_id":"vm-a","duration_s":3600,"reason":"patch"}"#,
        br#"{"name":"ops","url":"https://hooks.example/x"}"#,
        br#"{"fresh":"oWVub25jZUA=","csr_pem":"-----BEGIN CERTIFICATE REQUEST-----\nAA==\n-----END CERTIFICATE REQUEST-----\n"}"#,
        br#"{"entries":[{"id":1,"at":5,"actor":"admin","action":"x","detail":"{}","prev_hash":"0000000000000000000000000000000000000000000000000000000000000000","hash":"ab"}]}"#,
    ];
    let mut x: u64 = 0x1234_5678_9abc_def1;
    for seed in seeds {
        vmseal_verifier::fuzzing::request_bodies(seed);
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let mut d = seed.to_vec();
            let i = (x as usize) % d.len();
            match x % 3 {
                0 => {
                    let alphabet = b"{}[]\":,0\\\x00\xff";
                    d[i] = alphabet[(x >> 8) as usize % alphabet.len()];
                }
                1 => d.truncate(i),
                _ => d.insert(i, (x >> 16) as u8),
            }
            vmseal_verifier::fuzzing::request_bodies(&d);
        }
    }
}
