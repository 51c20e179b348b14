//! vmseal's host module: the agent beside the hypervisor. It captures running VMs with the
//! capture engine of [`vmseal_capture`] through the sources only a host has — the KVM micro-VM
//! ([`kvm`]) running real guest code ([`guest`]) and QEMU guests ([`qemu`]) — on a schedule or
//! when the verifier asks ([`daemon`]), and reports its own health ([`status`]).
//!
//! All `unsafe` lives in one private module (`sys`): the KVM and mmap interfaces.
#![deny(unsafe_code)]

pub mod bench;
pub mod daemon;
pub mod guest;
pub mod kvm;
pub mod qemu;
pub mod status;
mod sys;
