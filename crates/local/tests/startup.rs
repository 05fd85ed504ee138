//! What `ackflow serve` does before it serves, through the real binary: its files are private
//! whatever the umask, one server holds a data directory, and it announces itself only once its
//! database is open.

// Test code: a failed expectation is a failed test, and its message says which.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// `ackflow serve` on `data_dir` under `umask`, its stderr to `log`.
fn serve_under_umask(umask: &str, data_dir: &Path, log: &Path) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask {umask} && exec \"$0\" serve --listen 127.0.0.1:0 --data-dir \"$1\""
        ))
        .arg(env!("CARGO_BIN_EXE_ackflow"))
        .arg(data_dir)
        .env("ACKFLOW_LOG", "warn")
        .env_remove("ACKFLOW_TOKENS")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("sh starts")
}

/// The first line the server prints ("ackflow listening on …"), or "" when it exits first.
fn first_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout is piped"))
        .read_line(&mut line)
        .expect("stdout reads");
    line
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn the_data_directory_and_database_files_are_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let log = tmp.path().join("serve.log");
    let mut server = serve_under_umask("000", &data, &log);
    let first = first_line(&mut server);
    assert!(first.starts_with("ackflow listening on "), "{first:?}");
    let modes: Vec<(String, u32)> = ["", "ackflow.db", "ackflow.db-wal", "ackflow.db-shm"]
        .iter()
        .map(|name| (name.to_string(), mode(&data.join(name))))
        .collect();
    server.kill().expect("kill");
    server.wait().expect("reaped");
    assert_eq!(
        modes,
        [
            ("".to_owned(), 0o700),
            ("ackflow.db".to_owned(), 0o600),
            ("ackflow.db-wal".to_owned(), 0o600),
            ("ackflow.db-shm".to_owned(), 0o600),
        ],
        "modes (octal: 700 = 448, 600 = 384)"
    );
}

#[test]
fn an_existing_data_directory_others_can_read_is_named_in_a_warning() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("shared");
    std::fs::create_dir(&data).expect("dir");
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let log = tmp.path().join("serve.log");
    let mut server = serve_under_umask("022", &data, &log);
    let first = first_line(&mut server);
    server.kill().expect("kill");
    server.wait().expect("reaped");
    assert!(first.starts_with("ackflow listening on "), "{first:?}");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("other local users can read the data directory")
            && logged.contains(&data.display().to_string()),
        "{logged}"
    );
    assert_eq!(mode(&data), 0o755, "left as its owner made it");
    assert_eq!(mode(&data.join("ackflow.db")), 0o600);
}

#[test]
fn a_server_that_cannot_open_its_database_never_announces_itself_and_names_the_file() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    // A directory where the database file should be: it cannot be opened as one.
    std::fs::create_dir_all(data.join("ackflow.db")).expect("dirs");
    let log = tmp.path().join("serve.log");
    let mut server = serve_under_umask("022", &data, &log);
    let first = first_line(&mut server);
    let status = server.wait().expect("exits");
    let logged = std::fs::read_to_string(&log).expect("log");
    assert_eq!(
        first, "",
        "announced before it could serve; stderr: {logged}"
    );
    assert_eq!(status.code(), Some(2), "{logged}");
    assert!(
        logged.contains(&data.join("ackflow.db").display().to_string()),
        "{logged}"
    );
}

#[test]
fn a_second_server_on_the_same_data_directory_stops_naming_the_first() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().join("data");
    let mut first = serve_under_umask("022", &data, &tmp.path().join("first.log"));
    assert!(first_line(&mut first).starts_with("ackflow listening on "));
    let log = tmp.path().join("second.log");
    let mut second = serve_under_umask("022", &data, &log);
    let announced = first_line(&mut second);
    let status = second.wait().expect("exits");
    let logged = std::fs::read_to_string(&log).expect("log");
    let still_serving = first.try_wait().expect("status").is_none();
    let holder = first.id();
    first.kill().expect("kill");
    first.wait().expect("reaped");
    assert_eq!(announced, "", "{logged}");
    assert_eq!(status.code(), Some(2), "{logged}");
    assert!(
        logged.contains(&format!("already served by process {holder}")),
        "{logged}"
    );
    assert!(still_serving, "the first server went on");

    // Once the first one is gone (killed: no shutdown code ran), the directory is free again.
    let mut third = serve_under_umask("022", &data, &tmp.path().join("third.log"));
    assert!(first_line(&mut third).starts_with("ackflow listening on "));
    third.kill().expect("kill");
    third.wait().expect("reaped");
}
