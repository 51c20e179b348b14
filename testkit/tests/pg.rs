//! The PostgreSQL helper really runs a server: a database is created, answers, survives a
//! stop/start of its cluster.

use std::process::Command;
use vmseal_testkit::postgres::{PgCluster, PgDatabase};

fn select_one(url: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-X", "-At", "-d", url, "-c", "SELECT 40 + 2"])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn a_private_cluster_serves_stops_and_starts_again() {
    let mut c = PgCluster::start().unwrap();
    let url = c.url("postgres");
    assert_eq!(select_one(&url).unwrap(), "42");
    c.stop().unwrap();
    assert!(select_one(&url).is_err(), "stopped");
    c.start_again().unwrap();
    assert_eq!(select_one(&url).unwrap(), "42");
}

#[test]
fn each_test_gets_its_own_database() {
    let a = PgDatabase::create().unwrap();
    let b = PgDatabase::create().unwrap();
    assert_ne!(a.url, b.url);
    assert_eq!(select_one(&a.url).unwrap(), "42");
    assert_eq!(select_one(&b.url).unwrap(), "42");
}
