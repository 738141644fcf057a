//! The report folder of `flashmha diagnose`: CSV tables (similarity matrix, spectrum, clusters,
//! per-head entropy), the heatmap and spectrum pictures (PNG + SVG, see [`super::plots`]), the
//! probing map when properties were probed ([`super::probe`]), and a `summary.md` that says
//! what ran where. Writes only inside the folder it is given.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use super::entropy::{EntropySource, HeadEntropy};
use super::plots;
use super::probe::{self, ProbeMap};
use super::similarity::{SimilarityAnalysis, SimilarityMatrix};
use crate::common::error::{Error, Result};

/// Everything one report shows.
#[derive(Debug, Clone)]
pub struct Report<'a> {
    /// Key/value lines describing the run (shapes, dtype, seed, planted duplicates, ...).
    pub run: Vec<(String, String)>,
    pub matrix: &'a SimilarityMatrix,
    /// Where the matrix was computed, e.g. "head-similarity kernel on the PTX emulator".
    pub matrix_source: String,
    /// Tokens the matrix averages over.
    pub tokens: usize,
    pub analysis: &'a SimilarityAnalysis,
    pub entropy: &'a [HeadEntropy],
    pub entropy_source: EntropySource,
    /// Emulator findings and counters of the similarity launch, when it ran on the emulator.
    pub emulator: Option<String>,
    /// The probing map, when properties were probed ([`super::probe`]).
    pub probe: Option<&'a ProbeMap>,
}

/// File names inside the report folder.
pub const HEATMAP_STEM: &str = "similarity_heatmap";
pub const SPECTRUM_STEM: &str = "spectrum";
pub const SIMILARITY_CSV: &str = "similarity.csv";
pub const SPECTRUM_CSV: &str = "spectrum.csv";
pub const CLUSTERS_CSV: &str = "clusters.csv";
pub const ENTROPY_CSV: &str = "entropy.csv";
pub const SUMMARY_MD: &str = "summary.md";

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Writes the whole report into `dir` (created if missing); returns the files written.
pub fn write_report(dir: &Path, r: &Report) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let h = r.matrix.heads();
    let mut files = Vec::new();
    let mut put = |name: &str, text: String| -> Result<()> {
        let p = dir.join(name);
        write(&p, &text)?;
        files.push(p);
        Ok(())
    };
    put(SIMILARITY_CSV, similarity_csv(r.matrix))?;
    put(SPECTRUM_CSV, spectrum_csv(r.analysis))?;
    put(CLUSTERS_CSV, clusters_csv(r.analysis))?;
    put(ENTROPY_CSV, entropy_csv(r.entropy, r.entropy_source))?;
    put(SUMMARY_MD, summary_md(r))?;
    let title = format!(
        "Head similarity: mean cos(o_i, o_j) over {} tokens",
        r.tokens
    );
    files.extend(plots::write_heatmap(
        &dir.join(HEATMAP_STEM),
        r.matrix,
        r.analysis,
        &title,
    )?);
    files.extend(plots::write_spectrum(
        &dir.join(SPECTRUM_STEM),
        r.analysis,
        h,
    )?);
    if let Some(map) = r.probe {
        files.extend(probe::write_probe_files(dir, map)?);
    }
    Ok(files)
}

/// `head,0,1,...` then one row per head.
pub fn similarity_csv(m: &SimilarityMatrix) -> String {
    let h = m.heads();
    let mut s = String::from("head");
    for j in 0..h {
        let _ = write!(s, ",{j}");
    }
    s.push('\n');
    for i in 0..h {
        let _ = write!(s, "{i}");
        for j in 0..h {
            let _ = write!(s, ",{:.6}", m.get(i, j));
        }
        s.push('\n');
    }
    s
}

/// `rank,eigenvalue,share,cumulative_share`, largest first.
pub fn spectrum_csv(a: &SimilarityAnalysis) -> String {
    let mut s = String::from("rank,eigenvalue,share,cumulative_share\n");
    let mut cum = 0.0;
    for (k, l) in a.spectrum.eigenvalues.iter().enumerate() {
        let share = a.spectrum.share(k);
        cum += share;
        let _ = writeln!(s, "{},{l:.6},{share:.6},{cum:.6}", k + 1);
    }
    s
}

/// `cluster,heads,min_similarity,max_similarity` (heads space-separated).
pub fn clusters_csv(a: &SimilarityAnalysis) -> String {
    let mut s = String::from("cluster,heads,min_similarity,max_similarity\n");
    for (k, c) in a.clusters.iter().enumerate() {
        let (heads, lo, hi) = (c.heads_joined(" "), c.min_similarity, c.max_similarity);
        let _ = writeln!(s, "{k},{heads},{lo:.6},{hi:.6}");
    }
    s
}

/// `head,mean_nats,min_nats,max_nats,source`.
pub fn entropy_csv(e: &[HeadEntropy], source: EntropySource) -> String {
    let mut s = String::from("head,mean_nats,min_nats,max_nats,source\n");
    for x in e {
        let _ = writeln!(
            s,
            "{},{:.6},{:.6},{:.6},{}",
            x.head,
            x.mean,
            x.min,
            x.max,
            source.label()
        );
    }
    s
}

/// The human-readable summary: run, sources, headline numbers, clusters, entropy, files.
pub fn summary_md(r: &Report) -> String {
    let h = r.matrix.heads();
    let a = r.analysis;
    let mut s = String::from("# flashmha head diagnostics\n\n## Run\n\n");
    for (k, v) in &r.run {
        let _ = writeln!(s, "- {k}: {v}");
    }
    let _ = writeln!(s, "- similarity matrix: {}", r.matrix_source);
    let _ = writeln!(s, "- entropy: {}", r.entropy_source.label());
    let _ = writeln!(
        s,
        "\n## Similarity\n\n- effective distinct heads (participation ratio (Σλ)²/Σλ²): {:.3} of {h}",
        a.spectrum.effective_heads
    );
    if let Some((i, j, c)) = a.most_similar_pair {
        let _ = writeln!(s, "- most similar pair: heads {i} and {j}, mean cos {c:.4}");
    }
    let _ = writeln!(s, "- largest eigenvalues: {}", a.spectrum.largest(8, 3));
    let _ = writeln!(
        s,
        "- near-duplicate clusters (single linkage, mean cos >= {:.2}): {}",
        a.threshold,
        a.clusters.len()
    );
    for c in &a.clusters {
        let (heads, lo, hi) = (c.heads_joined(", "), c.min_similarity, c.max_similarity);
        let _ = writeln!(s, "  - heads {{{heads}}}: mean cos {lo:.4} .. {hi:.4}");
    }
    let _ = writeln!(
        s,
        "\n![similarity heatmap]({HEATMAP_STEM}.png)\n\n![spectrum]({SPECTRUM_STEM}.png)\n"
    );
    let _ = writeln!(
        s,
        "## Attention entropy per head ({}, nats)\n\n| head | mean | min | max |\n|---:|---:|---:|---:|",
        r.entropy_source.label()
    );
    for e in r.entropy {
        let _ = writeln!(
            s,
            "| {} | {:.4} | {:.4} | {:.4} |",
            e.head, e.mean, e.min, e.max
        );
    }
    if let Some(map) = r.probe {
        s += "\n";
        s += &probe::summary_section(map);
    }
    if let Some(emu) = &r.emulator {
        let _ = writeln!(s, "\n## Emulator\n\n```\n{}\n```", emu.trim_end());
    }
    let _ = writeln!(
        s,
        "\n## Files\n\n- {SIMILARITY_CSV}, {SPECTRUM_CSV}, {CLUSTERS_CSV}, {ENTROPY_CSV}\n\
         - {HEATMAP_STEM}.png / .svg, {SPECTRUM_STEM}.png / .svg"
    );
    if r.probe.is_some() {
        let _ = writeln!(
            s,
            "- {}, {}.png / .svg",
            probe::PROBE_CSV,
            probe::PROBE_HEATMAP_STEM
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::similarity::analyze;
    use super::*;

    #[test]
    fn csv_tables_have_one_row_per_item() {
        let m =
            SimilarityMatrix::new(3, vec![1.0, 0.95, 0.0, 0.95, 1.0, 0.1, 0.0, 0.1, 1.0]).unwrap();
        let a = analyze(&m, 0.9);
        let sim = similarity_csv(&m);
        assert_eq!(sim.lines().count(), 4);
        assert_eq!(sim.lines().nth(1).unwrap(), "0,1.000000,0.950000,0.000000");
        let spec = spectrum_csv(&a);
        assert_eq!(spec.lines().count(), 4);
        let last_cum: f64 = spec
            .lines()
            .last()
            .unwrap()
            .rsplit(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!((last_cum - 1.0).abs() < 1e-6);
        assert_eq!(
            clusters_csv(&a).lines().nth(1).unwrap(),
            "0,0 1,0.950000,0.950000"
        );
        let e = [HeadEntropy {
            head: 0,
            mean: 1.5,
            min: 1.0,
            max: 2.0,
        }];
        let csv = entropy_csv(&e, EntropySource::FusedKernel);
        assert!(
            csv.ends_with("0,1.500000,1.000000,2.000000,fused forward kernel (emulated)\n"),
            "{csv}"
        );
    }
}
