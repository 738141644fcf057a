//! `flashmha diagnose` and the probing map end to end: the demo property on generated inputs is
//! found in exactly the heads it was planted in, user label files are probed, and bad label
//! files fail before the forward runs, with nothing written.

use rand::{Rng, SeedableRng};

use super::head_similarity::{run_cli, scratch_dir};
use flashmha::diagnostics::npy::{write_npy, write_npy_int};

/// Small generated inputs (the emulated forward of 6 heads × 128 tokens per batch item takes
/// seconds); with `--batch 2`, 256 tokens to probe. The robustness measurement is tested in
/// `robustness.rs`.
const SMALL: [&str; 9] = [
    "--heads",
    "6",
    "--seq",
    "128",
    "--dim",
    "32",
    "--dtype",
    "f16",
    "--no-robustness",
];

/// `probe.csv` rows of `property` whose `encodes` column is true, as head indices.
fn encoding_heads(csv: &str, property: &str) -> Vec<usize> {
    csv.lines()
        .skip(1)
        .map(|l| l.split(',').collect::<Vec<_>>())
        .filter(|f| f[0] == property && f[5] == "true")
        .map(|f| f[1].parse().unwrap())
        .collect()
}

#[test]
fn diagnose_probes_the_demo_property_into_the_planted_heads() {
    let dir = scratch_dir("probe-demo");
    let out = dir.to_str().unwrap();
    let seed = rand::random::<u16>().to_string();
    let mut args = vec![
        "diagnose",
        "--seed",
        &seed,
        "--duplicate",
        "5:0",
        "--out",
        out,
    ];
    args.extend(SMALL);
    let stdout = run_cli(&args);
    // Carriers: the last two heads not named by --duplicate (5 is): 3 and 4.
    assert!(stdout.contains("carried by heads 3, 4"), "{stdout}");
    assert!(stdout.contains("probing map: ridge classifier"), "{stdout}");
    for f in ["probe.csv", "probe_heatmap.png", "probe_heatmap.svg"] {
        let len = std::fs::metadata(dir.join(f)).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{f} missing or empty (seed {seed})");
    }
    let csv = std::fs::read_to_string(dir.join("probe.csv")).unwrap();
    // 6 heads + 2 baseline rows per property, 2 properties, 1 header.
    assert_eq!(csv.lines().count(), 1 + 2 * 8, "{csv}");
    assert_eq!(
        encoding_heads(&csv, "planted"),
        vec![3, 4],
        "seed {seed}: {csv}"
    );
    assert_eq!(
        encoding_heads(&csv, "random"),
        Vec::<usize>::new(),
        "seed {seed}: {csv}"
    );
    let summary = std::fs::read_to_string(dir.join("summary.md")).unwrap();
    assert!(summary.contains("## Probing map"), "{summary}");
    assert!(summary.contains("| planted | 4 |"), "{summary}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Runs `flashmha` expecting failure; returns stderr.
fn run_cli_failing(args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_flashmha"))
        .args(args)
        .output()
        .unwrap();
    assert!(!out.status.success(), "flashmha {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn diagnose_probes_label_files_and_refuses_bad_ones_before_running() {
    let dir = scratch_dir("probe-files");
    let tokens = 2 * 128;
    let mut rng = rand::rngs::StdRng::seed_from_u64(rand::random());
    let labels: Vec<i64> = (0..tokens).map(|_| rng.random_range(0..5)).collect();
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    write_npy_int(&dir.join("ok.npy"), &[2, 128], &labels).unwrap();
    write_npy_int(&dir.join("short.npy"), &[tokens - 1], &labels[1..]).unwrap();
    let mut negative = labels.clone();
    negative[17] = -3;
    write_npy_int(&dir.join("negative.npy"), &[tokens], &negative).unwrap();
    write_npy_int(&dir.join("single.npy"), &[tokens], &vec![2; tokens]).unwrap();
    write_npy(&dir.join("float.npy"), &[tokens], &vec![1.0; tokens]).unwrap();
    std::fs::write(dir.join("garbage.npy"), b"not numpy").unwrap();
    let out = file("report");
    for (probe, expected) in [
        (
            "short.npy",
            "255 labels, but the attention inputs have 256 tokens",
        ),
        ("negative.npy", "label 17 is -3"),
        ("single.npy", "every label is 2"),
        ("float.npy", "not supported for integer arrays"),
        ("garbage.npy", "not a .npy file"),
        ("missing.npy", "missing.npy"),
    ] {
        let arg = format!("bad={}", file(probe));
        let mut args = vec!["diagnose", "--batch", "2", "--probe", &arg, "--out", &out];
        args.extend(SMALL);
        let stderr = run_cli_failing(&args);
        assert!(stderr.contains(expected), "{probe}: {stderr}");
        assert!(
            !dir.join("report").exists(),
            "{probe}: a report was written"
        );
    }
    let ok = format!("pos={}", file("ok.npy"));
    let mut args = vec![
        "diagnose",
        "--batch",
        "2",
        "--probe",
        &ok,
        "--probe-folds",
        "300",
        "--out",
        &out,
    ];
    args.extend(SMALL);
    assert!(run_cli_failing(&args).contains("300 folds for 256 tokens"));
    let mut args = vec!["diagnose", "--batch", "2", "--probe", &ok, "--out", &out];
    args.extend(SMALL);
    let stdout = run_cli(&args);
    assert!(
        stdout.contains(&format!("pos={}", file("ok.npy"))),
        "{stdout}"
    );
    let csv = std::fs::read_to_string(dir.join("report/probe.csv")).unwrap();
    // One property, 6 heads + 2 baselines; no demo property when labels are given.
    assert_eq!(csv.lines().count(), 1 + 8, "{csv}");
    assert!(csv.lines().skip(1).all(|l| l.starts_with("pos,")), "{csv}");
    std::fs::remove_dir_all(&dir).unwrap();
}
