//! Random-case checks of the kernels against the candle reference (feature `reference`): the
//! forward ([`forward`]), its backward ([`backward`], through the API on the emulator) and the
//! paged decode ([`decode`]), run through the one host runner
//! ([`crate::host::runner`]) on the emulator or a GPU, and judged by the one judge ([`judge`]).

pub mod backward;
pub mod decode;
pub mod forward;
pub mod judge;
pub mod mla;

/// The words a case description gives its options and optional tensors: the options' features,
/// then each of ALiBi, gates, LSE and entropy that is on (`[alibi, gates, lse, entropy]`).
/// Attention-sink logits for `heads` query heads, as the random cases draw them: a tenth of
/// the heads without a sink (-inf), the others uniform in [-4, 6) (from negligible to holding
/// most of a row's mass).
pub fn draw_sinks(rng: &mut impl rand::Rng, heads: usize) -> Vec<f32> {
    (0..heads)
        .map(|_| {
            if rng.random_bool(0.1) {
                f32::NEG_INFINITY
            } else {
                rng.random_range(-4.0f32..6.0)
            }
        })
        .collect()
}

fn feature_words(options: &crate::common::options::AttnOptions, on: [bool; 5]) -> Vec<String> {
    let mut words = options.features();
    for (on, name) in on
        .into_iter()
        .zip(["alibi", "gates", "sinks", "lse", "entropy"])
    {
        if on {
            words.push(name.to_string());
        }
    }
    words
}
