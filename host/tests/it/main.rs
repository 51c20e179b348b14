//! Integration tests of the host module on the real /dev/kvm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed step is a failed test

mod capture;
mod kaslr;
mod kvm;
mod qemu;
