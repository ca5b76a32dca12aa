//! docs/errors.md, the catalogue of bad inputs, is checked here row by row: each example command
//! runs as written (in a folder holding the files the document describes) and must exit with the
//! row's code, print every code span of the row's message column on stderr, and not panic. The
//! document and the behaviour cannot drift apart without this test failing.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use svcca_storage::npy::write_npy;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[derive(Debug)]
struct Row {
    input: String,
    args: Vec<String>,
    needles: Vec<String>,
    exit: i32,
}

/// The code spans of a Markdown table cell (single or double backticks), trimmed.
fn code_spans(cell: &str) -> Vec<String> {
    let mut spans = Vec::new();
    let mut rest = cell;
    while let Some(start) = rest.find('`') {
        let ticks = rest[start..].chars().take_while(|&c| c == '`').count();
        let fence = "`".repeat(ticks);
        let body = &rest[start + ticks..];
        let end = body
            .find(&fence)
            .unwrap_or_else(|| panic!("unclosed code span in {cell:?}"));
        spans.push(body[..end].trim().to_string());
        rest = &body[end + ticks..];
    }
    spans
}

fn catalogue() -> Vec<Row> {
    let text = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    let mut lines = text.lines().skip_while(|l| !l.starts_with("| Input |"));
    lines.next().expect("the table's header row");
    lines.next().expect("the table's separator row");
    lines
        .take_while(|l| l.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_start_matches('|')
                .trim_end_matches('|')
                .split(" | ")
                .map(str::trim)
                .collect();
            assert_eq!(cells.len(), 4, "a row has 4 cells: {line}");
            let example = code_spans(cells[1]);
            assert_eq!(example.len(), 1, "one example command: {line}");
            let args: Vec<String> = example[0].split_whitespace().map(String::from).collect();
            assert_eq!(args[0], "svcca", "examples run svcca: {line}");
            let needles = code_spans(cells[2]);
            assert!(!needles.is_empty(), "a message to look for: {line}");
            Row {
                input: cells[0].to_string(),
                args: args[1..].to_vec(),
                needles,
                exit: cells[3].parse().expect("an exit code"),
            }
        })
        .collect()
}

fn npy_i32(path: &Path, shape: [usize; 2]) {
    let header = format!(
        "{{'descr': '<i4', 'fortran_order': False, 'shape': ({}, {}), }}",
        shape[0], shape[1]
    );
    let pad = (64 - (10 + header.len() + 1) % 64) % 64;
    let header = format!("{header}{}\n", " ".repeat(pad));
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    for v in 0..(shape[0] * shape[1]) as i32 {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// A copy of the example dataset sharing its shards, with `edit` applied to the manifest.
fn edited_dataset(dir: &Path, edit: impl Fn(&mut serde_json::Value)) {
    let example = repo().join("examples/digits-dataset");
    std::fs::create_dir_all(dir).unwrap();
    std::os::unix::fs::symlink(example.join("data"), dir.join("data")).unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(example.join("manifest.json")).unwrap()).unwrap();
    edit(&mut manifest);
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
}

fn first_h1(manifest: &mut serde_json::Value) -> &mut serde_json::Value {
    manifest["representations"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|r| r["key"]["layer"] == "h1" && r["key"]["seed"] == 0 && r["key"]["step"] == 0)
        .unwrap()
}

/// The files the document's examples name (see its list).
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name);
    let values = |n: usize, d: usize| -> Vec<f32> {
        (0..n * d)
            .map(|i| ((i * 7919 % 1013) as f32) / 1013.0)
            .collect()
    };
    write_npy(p("ok.npy"), &[50, 8], &values(50, 8)).unwrap();
    write_npy(p("short.npy"), &[40, 8], &values(40, 8)).unwrap();
    write_npy(p("3d.npy"), &[50, 2, 4], &values(50, 8)).unwrap();
    write_npy(p("wide.npy"), &[100, 30_000], &values(100, 30_000)).unwrap();
    let mut with_nan = values(50, 8);
    with_nan[17] = f32::NAN;
    write_npy(p("nan.npy"), &[50, 8], &with_nan).unwrap();
    npy_i32(&p("ints.npy"), [50, 8]);
    {
        use std::io::Write;
        let mut zip = zip::ZipWriter::new(std::fs::File::create(p("acts.npz")).unwrap());
        for name in ["a", "b"] {
            zip.start_file(
                format!("{name}.npy"),
                zip::write::SimpleFileOptions::default(),
            )
            .unwrap();
            zip.write_all(&std::fs::read(p("ok.npy")).unwrap()).unwrap();
        }
        zip.finish().unwrap();
    }
    std::fs::create_dir_all(p("src4d/run/seed0/step1")).unwrap();
    write_npy(
        p("src4d/run/seed0/step1/conv.npy"),
        &[50, 2, 2, 2],
        &values(50, 8),
    )
    .unwrap();
    let ok = std::fs::read(p("ok.npy")).unwrap();
    std::fs::write(p("truncated.npy"), &ok[..ok.len() - 100]).unwrap();
    std::fs::write(p("notnpy.npy"), "hello, not an array\n").unwrap();
    std::os::unix::fs::symlink(repo().join("examples/digits-dataset"), p("digits")).unwrap();
    edited_dataset(&p("claims-wide"), |m| {
        first_h1(m)["shape"] = serde_json::json!([597, 1_000_000_000_000u64]);
    });
    edited_dataset(&p("claims-rows"), |m| {
        m["probe_set"]["datapoints"] = serde_json::json!(1_000_000_000_000u64);
        first_h1(m)["shape"] = serde_json::json!([1_000_000_000_000u64, 128]);
    });
    edited_dataset(&p("resized"), |m| {
        let bytes = first_h1(m)["shards"][0]["bytes"].as_u64().unwrap();
        first_h1(m)["shards"][0]["bytes"] = serde_json::json!(bytes + 1);
    });
    // h1's shard entry now points at h2's file (the same size): its bytes are not the ones
    // the manifest's SHA-256 names, as when a shard is replaced after ingest.
    edited_dataset(&p("swapped"), |m| {
        let h2_path = m["representations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["key"]["layer"] == "h2" && r["key"]["seed"] == 0 && r["key"]["step"] == 0)
            .unwrap()["shards"][0]["path"]
            .clone();
        first_h1(m)["shards"][0]["path"] = h2_path;
    });
    // h1's shard entry names a file that is not there, as when a shard is deleted.
    edited_dataset(&p("gone"), |m| {
        first_h1(m)["shards"][0]["path"] = serde_json::json!("data/deleted.arrow");
    });
    std::fs::create_dir_all(p("src/run/seed0/step1")).unwrap();
    std::fs::write(p("src/run/seed0/step1/h1.npy"), "not an array").unwrap();
    std::fs::write(p("afile"), "a regular file").unwrap();
    std::fs::create_dir_all(p("taken")).unwrap();
    std::fs::write(
        p("taken/job.toml"),
        "dataset = \"/elsewhere\"\noutput = \"taken\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(p("empty")).unwrap();
    for (name, body) in [
        ("bad-comparison", "comparison = \"sideways\"\n"),
        ("misspelt-field", "metircs = [\"cka\"]\n"),
        ("bad-keep", "[keep]\nvariance = 1.5\n"),
        ("tiny-memory", "[resources]\nmemory_mb = 8\n"),
        ("no-match", "[select]\nwhere = { layer = \"h9\" }\n"),
    ] {
        std::fs::write(
            p(&format!("{name}.toml")),
            format!("dataset = \"digits\"\noutput = \"out-{name}\"\n{body}"),
        )
        .unwrap();
    }
    std::fs::write(p("not-toml.toml"), "this is = not toml [\n").unwrap();
    std::fs::write(
        p("missing-dataset.toml"),
        "dataset = \"nowhere\"\noutput = \"out-missing\"\n",
    )
    .unwrap();
    dir
}

/// Runs svcca in `dir`, killing it after `limit` (a command that should exit but waits forever
/// fails its row instead of hanging the suite).
fn run(dir: &Path, args: &[String], limit: Duration) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args(args)
        .current_dir(dir)
        .env("SVCCA_THREADS", "1")
        .env_remove("SVCCA_COORDINATOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        stderr.read_to_string(&mut text).unwrap();
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap();
    (status.and_then(|s| s.code()), text)
}

#[test]
fn every_row_of_the_error_catalogue_holds() {
    let rows = catalogue();
    assert!(
        rows.len() >= 40,
        "the catalogue lost rows: {} left",
        rows.len()
    );
    let dir = scratch();
    let mut wrong = Vec::new();
    for row in &rows {
        let (code, stderr) = run(dir.path(), &row.args, Duration::from_secs(60));
        let missing: Vec<&String> = row
            .needles
            .iter()
            .filter(|n| !stderr.contains(n.as_str()))
            .collect();
        if code != Some(row.exit) || !missing.is_empty() || stderr.contains("panicked") {
            wrong.push(format!(
                "{} (svcca {}): expected exit {} and {:?}; got exit {:?}, missing {:?}, stderr:\n{}",
                row.input,
                row.args.join(" "),
                row.exit,
                row.needles,
                code,
                missing,
                stderr
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} row(s) of docs/errors.md do not hold:\n\n{}",
        wrong.len(),
        wrong.join("\n\n")
    );
}

/// The other side of "an unparsable URL exits at once": a well-formed URL of a coordinator that
/// is not up is waited for, as the catalogue says, and the worker says what it waits for.
#[test]
fn a_worker_waits_for_a_coordinator_that_is_not_up_and_says_so() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_svcca"))
        .args([
            "worker",
            "--coordinator",
            "http://127.0.0.1:9",
            "--health-listen",
            "127.0.0.1:0",
        ])
        .env_remove("SVCCA_COORDINATOR")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut waiting = None;
    for line in stderr.lines().take(3) {
        let line = line.unwrap();
        if line.contains("cannot register yet") {
            waiting = Some(line);
            break;
        }
    }
    let still_running = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    let waiting = waiting.expect("the worker logs that it cannot register yet");
    assert!(waiting.contains("http://127.0.0.1:9"), "{waiting}");
    assert!(waiting.contains("retry_in_ms"), "{waiting}");
    assert!(still_running, "the worker must keep waiting");
    let text = std::fs::read_to_string(repo().join("docs/errors.md")).unwrap();
    assert!(text.contains("`cannot register yet`"));
}

#[test]
fn code_spans_are_read_as_markdown_writes_them() {
    assert_eq!(code_spans("`a` … `b c`"), vec!["a", "b c"]);
    assert_eq!(
        code_spans("``unknown field `x` ``"),
        vec!["unknown field `x`"]
    );
    assert_eq!(code_spans("`` `port` is ``"), vec!["`port` is"]);
    assert!(code_spans("no code").is_empty());
}
