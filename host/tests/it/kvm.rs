//! The micro-VM runs its guest program on the real /dev/kvm: heartbeats, pause and resume, the
//! dirty log, and attacks injected from the host.

use std::time::Duration;

use vmseal_capture::source::{DirtyLog, GuestMemory, PAGE, Pausable};
use vmseal_host::guest;
use vmseal_host::kvm::{MicroVm, MicroVmConfig};

fn vm() -> MicroVm {
    let vm = MicroVm::start(MicroVmConfig {
        mem_mib: 16,
        ws_pages: 256,
        stride: 7,
    })
    .unwrap();
    assert!(
        vm.wait_heartbeats(3, Duration::from_secs(20)),
        "guest made no progress: {:?}",
        vm.exited()
    );
    vm
}

fn read_u32(vm: &MicroVm, gpa: u64) -> u32 {
    let mut b = [0u8; 4];
    vm.read(gpa, &mut b).unwrap();
    u32::from_le_bytes(b)
}

#[test]
fn guest_runs_and_counts_its_tasks_and_syscalls() {
    let vm = vm();
    // The guest walks the task list and stores the count in the first working-set word.
    assert_eq!(read_u32(&vm, guest::WORKING_SET), guest::NR_TASKS);
    // Every handler has been called through the pointer table.
    for i in 0..guest::NR_SYSCALLS as u64 {
        assert!(
            read_u32(&vm, guest::WORKING_SET + 4 + 4 * i) > 0,
            "handler {i}"
        );
    }
}

#[test]
fn pause_stops_the_guest_and_resume_restarts_it() {
    let mut vm = vm();
    let took = vm.pause().unwrap();
    assert!(took < Duration::from_secs(1), "{took:?}");
    let a = read_u32(&vm, guest::WORKING_SET + 4);
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(
        read_u32(&vm, guest::WORKING_SET + 4),
        a,
        "paused guest must not write"
    );
    vm.resume().unwrap();
    assert!(vm.wait_heartbeats(2, Duration::from_secs(10)));
    assert!(read_u32(&vm, guest::WORKING_SET + 4) > a);
}

#[test]
fn dirty_log_sees_guest_writes_and_host_injections() {
    let mut vm = vm();
    let first = vm.dirty_pages().unwrap();
    assert_eq!(first.count(), 16 * 256, "first harvest reports every page");
    vm.pause().unwrap();
    let _ = vm.dirty_pages().unwrap(); // drain what happened before the pause
    let quiet = vm.dirty_pages().unwrap();
    assert_eq!(quiet.count(), 0, "a paused guest dirties nothing");
    let at = vm.inject_pointer_hook(5, 6).unwrap();
    let d = vm.dirty_pages().unwrap();
    assert_eq!(
        d.iter().collect::<Vec<_>>(),
        vec![at / PAGE],
        "a host write is tracked"
    );
    vm.resume().unwrap();
    assert!(vm.wait_heartbeats(2, Duration::from_secs(10)));
    let d = vm.dirty_pages().unwrap();
    let ws_first = guest::WORKING_SET / PAGE;
    assert!(d.contains(ws_first), "counter page written");
    assert!(
        d.iter()
            .all(|p| p >= ws_first || p == guest::STACK_TOP / PAGE - 1),
        "{:?}",
        d.iter().take(10).collect::<Vec<_>>()
    );
    assert!(d.count() > 10 && d.count() <= 258, "{}", d.count());
}

#[test]
fn attacks_keep_the_guest_running() {
    let vm = vm();
    vm.inject_code_patch(3).unwrap();
    vm.inject_pointer_hook(5, 6).unwrap();
    vm.inject_hidden_task(7).unwrap();
    assert!(
        vm.wait_heartbeats(3, Duration::from_secs(10)),
        "{:?}",
        vm.exited()
    );
    assert_eq!(
        read_u32(&vm, guest::WORKING_SET),
        guest::NR_TASKS - 1,
        "the guest now sees one task fewer"
    );
    let c3 = read_u32(&vm, guest::WORKING_SET + 4 + 12);
    assert!(vm.wait_heartbeats(2, Duration::from_secs(10)));
    assert_eq!(
        read_u32(&vm, guest::WORKING_SET + 4 + 12),
        c3,
        "patched handler 3 no longer counts"
    );
}
