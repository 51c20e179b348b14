//! vmseal's host module: reads a running VM's guest memory, chooses regions by a policy, hashes
//! them into per-page Merkle trees and hands the result to the seal.
//!
//! Memory comes from a [`source::MemorySource`]: the KVM micro-VM ([`kvm`]) running real guest code
//! ([`guest`]), QEMU guests, or dump files. All `unsafe` lives in one private module (`sys`).
#![deny(unsafe_code)]

pub mod capture;
pub mod dump;
pub mod guest;
pub mod kvm;
pub mod policy;
pub mod source;
mod sys;
