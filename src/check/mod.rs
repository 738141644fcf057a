//! Random-case checks of the kernels against the candle reference (feature `reference`): the
//! forward ([`forward`]) and paged decode ([`decode`]), run through the one host runner
//! ([`crate::host::runner`]) on the emulator or a GPU, and judged by the one judge ([`judge`]).

pub mod decode;
pub mod forward;
pub mod judge;

/// The words a case description gives its options and optional tensors: the options' features,
/// then each of ALiBi, gates, LSE and entropy that is on (`[alibi, gates, lse, entropy]`).
fn feature_words(options: &crate::common::options::AttnOptions, on: [bool; 4]) -> Vec<String> {
    let mut words = options.features();
    for (on, name) in on.into_iter().zip(["alibi", "gates", "lse", "entropy"]) {
        if on {
            words.push(name.to_string());
        }
    }
    words
}
