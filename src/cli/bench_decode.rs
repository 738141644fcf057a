//! `flashmha bench --decode`: paged-decode counters on the emulator (exact counts per cached
//! key per KV head and whole-call bytes vs compulsory; no times), the table of
//! bench/results/decode.txt.

pub fn run() -> super::CliResult<()> {
    use flashmha::decode::bench::{default_configs, format_table, measure};
    let configs = default_configs();
    let bar = super::progress::bar(configs.len(), "configs");
    let mut rows = Vec::new();
    for c in &configs {
        rows.push(measure(c).map_err(super::CliError::Failed)?);
        bar.inc(1);
    }
    bar.finish_and_clear();
    print!("{}", format_table(&rows));
    Ok(())
}
