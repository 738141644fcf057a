//! Progress bars for long subcommands (indicatif with one shared style).

/// A bar over `n` items called `unit` (e.g. "cases"), with elapsed time, ETA and a message slot.
pub fn bar(n: usize, unit: &str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(n as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, eta {{eta}} {{msg}}"
        ))
        .expect("the template is well-formed"),
    );
    bar
}
