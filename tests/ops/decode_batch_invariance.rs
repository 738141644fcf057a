//! Batch-invariant decode: with a fixed split size in keys (SplitPolicy::FixedKeys), a
//! sequence's output bits (O and LSE) are the same whether it is decoded alone or inside a
//! random batch (other lengths, other position, more splits in the plan). Random lengths,
//! page sizes, GQA ratios and values; compared bit for bit.

use flashmha::check::decode::DecodeCase;
use flashmha::common::dtype::DType;
use flashmha::common::options::AttnOptions;
use flashmha::host::emulated_decode::decode;
use flashmha::ops::decode::{DecodePlan, SplitPolicy};
use proptest::prelude::*;

fn case(
    lens: Vec<usize>,
    sq: usize,
    page_size: usize,
    group: usize,
    split_keys: u32,
    causal: bool,
    seed: u64,
) -> DecodeCase {
    let batch = lens.len();
    DecodeCase {
        target: flashmha::KernelTarget::Ampere,
        dtype: DType::Bf16,
        head_dim: 64,
        head_dim_v: 64,
        num_heads_kv: 2,
        group,
        cache_lens: lens,
        q_lens: vec![sq; batch],
        varlen: false,
        page_size,
        head_major_pages: false,
        kv_dtype: Default::default(),
        kv_scales: Default::default(),
        shared_prefix_pages: 0,
        spare_pages: 1,
        options: AttnOptions {
            causal,
            ..AttnOptions::default()
        },
        alibi: false,
        gates: false,
        sinks: false,
        lse: true,
        entropy: false,
        split: SplitPolicy::FixedKeys(split_keys),
        seed,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn fixed_split_size_output_is_bitwise_batch_invariant(
        len in 1usize..=400,
        others in prop::collection::vec(0usize..=700, 1..=3),
        pos_pick in any::<prop::sample::Index>(),
        sq in 1usize..=3,
        page_size in prop_oneof![Just(1usize), Just(7), Just(16), Just(64)],
        group in 1usize..=4,
        split_keys in prop_oneof![Just(64u32), Just(128), Just(192)],
        causal in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let alone = case(vec![len], sq, page_size, group, split_keys, causal, seed).build();
        let pos = pos_pick.index(others.len() + 1);
        let mut lens = others.clone();
        lens.insert(pos, len);
        let mut batch = case(lens, sq, page_size, group, split_keys, causal, seed ^ 0x5eed).build();

        // Copy the sequence's q rows and cached K/V into the batch case.
        let (pa, pb) = (&alone.problem, &batch.problem);
        let (hq, d) = (pa.num_heads_q, pa.head_dim);
        let row = hq * d;
        let item = sq * row;
        batch.inputs.q[pos * item..(pos + 1) * item].copy_from_slice(&alone.inputs.q[..item]);
        let ks = pa.k_strides;
        for j in 0..len {
            let page_a = alone.inputs.block_table[j / page_size] as i64;
            let page_b = batch.inputs.block_table[pos * pb.block_table_stride + j / page_size] as i64;
            let slot = (j % page_size) as i64;
            for h in 0..pa.num_heads_kv {
                let oa = (page_a * ks.page + slot * ks.slot + h as i64 * ks.head) as usize;
                let ob = (page_b * ks.page + slot * ks.slot + h as i64 * ks.head) as usize;
                batch.inputs.k_cache[ob..ob + d].copy_from_slice(&alone.inputs.k_cache[oa..oa + d]);
                batch.inputs.v_cache[ob..ob + d].copy_from_slice(&alone.inputs.v_cache[oa..oa + d]);
            }
        }

        let plan_a = DecodePlan::new(pa, SplitPolicy::FixedKeys(split_keys)).unwrap();
        let plan_b = DecodePlan::new(pb, SplitPolicy::FixedKeys(split_keys)).unwrap();
        let run_a = decode(&plan_a, &alone.inputs).unwrap();
        let run_b = decode(&plan_b, &batch.inputs).unwrap();
        prop_assert!(run_a.findings().is_empty() && run_b.findings().is_empty());
        prop_assert_eq!(&run_a.o[..item], &run_b.o[pos * item..(pos + 1) * item]);
        let (la, lb) = (run_a.lse.unwrap(), run_b.lse.unwrap());
        // lse: [b, hq, sq]
        let bits = |xs: &[f32]| xs.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        prop_assert_eq!(bits(&la[..hq * sq]), bits(&lb[pos * hq * sq..(pos + 1) * hq * sq]));
    }
}
