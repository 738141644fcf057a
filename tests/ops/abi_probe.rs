//! The params ABI as nvcc sees it equals the bindgen structs: the ABI probe kernel writes
//! sizeof/alignof/offsetof of every field on the emulator, and we compare with Rust's layout.
//! The field lists are read from kernels/params.h, so a field added to the header but not here
//! (or in another order) fails too.

use flashmha::common::abi::{
    FlashAttnOptions, FlashDecodeParams, FlashFwdParams, FlashFwdTmaParams, HeadSimParams,
    KvAppendParams, MergeStatesParams,
};
use flashmha::common::build_info::module_of;
use flashmha::emulator::{Device, LaunchConfig, Module};
use std::mem::{align_of, offset_of, size_of};

const PARAMS_H: &str = include_str!("../../kernels/params.h");

/// Field names of the X-macro `name` in params.h, in order.
fn header_fields(name: &str) -> Vec<String> {
    // The macro's body: the rest of the #define line, then every continuation line (a
    // one-line macro such as FLASHMHA_ABI_PROBE_TMA_FIELDS has its fields on the first).
    let header = format!("#define {name}(X)");
    let start = PARAMS_H.find(&header).expect("macro in params.h") + header.len();
    let mut body = String::new();
    for line in PARAMS_H[start..].lines() {
        let line = line.trim_end();
        body.push_str(line.trim_end_matches('\\'));
        body.push(' ');
        if !line.ends_with('\\') {
            break;
        }
    }
    body.split("X(")
        .skip(1)
        .map(|s| s.split(')').next().unwrap().trim().to_string())
        .collect()
}

macro_rules! layout {
    ($ty:ty; $($field:ident),*) => {
        (
            vec![size_of::<$ty>() as u64, align_of::<$ty>() as u64 $(, offset_of!($ty, $field) as u64)*],
            vec![$(stringify!($field).to_string()),*],
        )
    };
}

/// Runs the probe kernel `entry` on the emulator and returns the `n` u64 values it wrote.
fn run_probe(entry: &str, n: usize) -> Vec<u64> {
    let image = module_of(entry).expect("probe kernel embedded");
    let module = Module::parse(image.ptx).expect("probe PTX parses");
    let mut dev = Device::new();
    let out = dev.alloc(n * 8);
    // Poison so a value the probe did not write cannot match.
    dev.write(out, &vec![0xAB; n * 8]).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let report = dev
        .launch(&module, entry, &cfg, &out.0.to_le_bytes())
        .expect("probe runs");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    dev.read(out, n * 8)
        .unwrap()
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

#[test]
fn device_layout_of_params_structs_equals_bindgen_layout() {
    let (fwd, fwd_names) = layout!(FlashFwdParams;
        q, k, v, o, cu_seqlens_q, cu_seqlens_k,
        q_batch_stride, q_row_stride, q_head_stride, k_batch_stride, k_row_stride, k_head_stride,
        v_batch_stride, v_row_stride, v_head_stride, o_batch_stride, o_row_stride, o_head_stride,
        opt, batch, num_heads_q, num_heads_kv, head_dim, seqlen_q, seqlen_k, total_q, total_k);
    let (opt, opt_names) = layout!(FlashAttnOptions;
        lse, entropy, alibi_slopes, head_gates, sinks, lse_batch_stride, lse_head_stride, scale,
        scale_log2, softcap, window_left, window_right, flags);
    let (sim, sim_names) = layout!(HeadSimParams;
        o, gram, token_stride, head_stride, num_tokens, num_heads, head_dim, tokens_per_cta);
    let (tma, tma_names) = layout!(FlashFwdTmaParams; q_map, k_map, v_map, base);
    assert_eq!(tma_names, header_fields("FLASHMHA_ABI_PROBE_TMA_FIELDS"));
    // The tensor maps must sit on 64-byte boundaries (CUtensorMap's alignment).
    assert_eq!(align_of::<FlashFwdTmaParams>(), 64);
    assert_eq!(fwd_names, header_fields("FLASHMHA_ABI_PROBE_FIELDS"));
    assert_eq!(
        sim_names,
        header_fields("FLASHMHA_ABI_PROBE_HEADSIM_FIELDS")
    );

    assert_eq!(
        opt_names,
        header_fields("FLASHMHA_ABI_PROBE_OPTIONS_FIELDS")
    );

    let device = run_probe(
        "flashmha_abi_probe",
        fwd.len() + sim.len() + tma.len() + opt.len(),
    );
    assert_eq!(
        device[..fwd.len()],
        fwd[..],
        "FlashFwdParams: device vs bindgen (size, align, offsets)"
    );
    let sim_end = fwd.len() + sim.len();
    assert_eq!(
        device[fwd.len()..sim_end],
        sim[..],
        "HeadSimParams: device vs bindgen (size, align, offsets)"
    );
    let tma_end = sim_end + tma.len();
    assert_eq!(
        device[sim_end..tma_end],
        tma[..],
        "FlashFwdTmaParams: device vs bindgen (size, align, offsets)"
    );
    assert_eq!(
        device[tma_end..],
        opt[..],
        "FlashAttnOptions: device vs bindgen (size, align, offsets)"
    );
}

#[test]
fn device_layout_of_decode_params_equals_bindgen_layout() {
    let (dec, dec_names) = layout!(FlashDecodeParams;
        q, k_cache, v_cache, o, block_table, cache_seqlens, cu_seqlens_q, partial_o, partial_lse, partial_entropy, k_scales, v_scales, q_batch_stride, q_row_stride, q_head_stride, o_batch_stride, o_row_stride, o_head_stride, k_page_stride, k_slot_stride, k_head_stride, v_page_stride, v_slot_stride, v_head_stride, block_table_stride, page_div_magic, opt, batch, num_heads_q, num_heads_kv, head_dim, seqlen_q, total_q, num_pages, page_size, max_pages_per_seq, page_div_shift, num_splits, split_keys, kv_format, kv_scale_stride);
    let (mrg, mrg_names) = layout!(MergeStatesParams;
        o_states, lse_states, entropy_states, o_states_b, lse_states_b, entropy_states_b, o,
        lse, entropy, head_gates, o_state_stride,
        o_state_row_stride, o_state_head_stride, lse_state_stride, lse_state_row_stride,
        lse_state_head_stride, o_batch_stride, o_row_stride, o_head_stride, lse_batch_stride,
        lse_head_stride, num_states, rows, heads, head_dim, rows_per_batch, pad0);
    let (app, app_names) = layout!(KvAppendParams;
        k_new, v_new, k_cache, v_cache, slot_mapping, block_table, token_batch, token_pos, k_scales, v_scales, k_new_token_stride, k_new_head_stride, v_new_token_stride, v_new_head_stride, k_page_stride, k_slot_stride, k_head_stride, v_page_stride, v_slot_stride, v_head_stride, block_table_stride, num_tokens, num_heads_kv, head_dim, num_pages, page_size, batch, max_pages_per_seq, kv_format, kv_scale_stride, flags);
    assert_eq!(dec_names, header_fields("FLASHMHA_ABI_PROBE_DECODE_FIELDS"));
    assert_eq!(mrg_names, header_fields("FLASHMHA_ABI_PROBE_MERGE_FIELDS"));
    assert_eq!(
        app_names,
        header_fields("FLASHMHA_ABI_PROBE_KV_APPEND_FIELDS")
    );

    let device = run_probe(
        "flashmha_abi_probe_decode",
        dec.len() + mrg.len() + app.len(),
    );
    let (a, b) = (dec.len(), dec.len() + mrg.len());
    assert_eq!(device[..a], dec[..], "FlashDecodeParams: device vs bindgen");
    assert_eq!(
        device[a..b],
        mrg[..],
        "MergeStatesParams: device vs bindgen"
    );
    assert_eq!(device[b..], app[..], "KvAppendParams: device vs bindgen");
}
