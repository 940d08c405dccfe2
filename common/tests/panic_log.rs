//! A panic reaches the log file, after the lines said before it (its own process: the panic
//! hook is the whole process's).

#[test]
fn a_panic_is_said_in_the_log_file_after_the_lines_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stub.log");
    common::log::to_file(&path, 1 << 20, 1).unwrap();
    common::log::keep_panics();
    let failed = std::thread::spawn(|| {
        common::log::line("the last line before it");
        panic!("something broke");
    })
    .join();
    assert!(failed.is_err());
    // The hook waited for the file to take the lines: they are there now.
    let log = std::fs::read_to_string(&path).unwrap();
    let before = log.find("the last line before it").expect(&log);
    let panic = log.find("panic: ").expect(&log);
    assert!(before < panic, "{log}");
    assert!(log[panic..].contains("something broke"), "{log}");
}
