//! End-to-end tests of vmseal live in `e2e.rs`; they run the workspace's binaries (build them
//! first with `cargo build --workspace --bins`, as `scripts/test.sh` does) against a real swtpm.
