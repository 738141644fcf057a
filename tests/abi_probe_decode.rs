//! The decode params structs as nvcc lays them out equal the bindgen structs: the probe kernel
//! (kernels/abi_probe_decode.cu) writes sizeof/alignof/offsetof of every field on the emulator.
//! Field lists are read from kernels/params.h, so a field missing here fails too.

use flashmha::abi::{FlashDecodeParams, KvAppendParams, MergeStatesParams};
use flashmha::build_info::module_of;
use flashmha::emulator::{Device, LaunchConfig, Module};
use std::mem::{align_of, offset_of, size_of};

const PARAMS_H: &str = include_str!("../kernels/params.h");

fn header_fields(name: &str) -> Vec<String> {
    let start = PARAMS_H
        .find(&format!("#define {name}(X)"))
        .expect("macro in params.h");
    let body: String = PARAMS_H[start..]
        .lines()
        .skip(1)
        .take_while(|l| l.trim_end().ends_with('\\') || l.contains("X("))
        .collect::<Vec<_>>()
        .join(" ");
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

#[test]
fn device_layout_of_decode_params_equals_bindgen_layout() {
    let (dec, dec_names) = layout!(FlashDecodeParams;
        q, k_cache, v_cache, o, lse, entropy, alibi_slopes, head_gates, block_table,
        cache_seqlens, cu_seqlens_q, partial_o, partial_lse, partial_entropy, q_batch_stride,
        q_row_stride, q_head_stride, o_batch_stride, o_row_stride, o_head_stride, k_page_stride,
        k_slot_stride, k_head_stride, v_page_stride, v_slot_stride, v_head_stride,
        lse_batch_stride, lse_head_stride, block_table_stride, page_div_magic, batch, num_heads_q,
        num_heads_kv, head_dim, seqlen_q, total_q, num_pages, page_size, max_pages_per_seq,
        page_div_shift, num_splits, split_keys, scale, scale_log2, softcap, window_left,
        window_right, flags);
    let (mrg, mrg_names) = layout!(MergeStatesParams;
        o_states, lse_states, entropy_states, o, lse, entropy, head_gates, o_state_stride,
        o_state_row_stride, o_state_head_stride, lse_state_stride, lse_state_row_stride,
        lse_state_head_stride, o_batch_stride, o_row_stride, o_head_stride, lse_batch_stride,
        lse_head_stride, num_states, rows, heads, head_dim, rows_per_batch, pad0);
    let (app, app_names) = layout!(KvAppendParams;
        k_new, v_new, k_cache, v_cache, slot_mapping, k_new_token_stride, k_new_head_stride,
        v_new_token_stride, v_new_head_stride, k_page_stride, k_slot_stride, k_head_stride,
        v_page_stride, v_slot_stride, v_head_stride, num_tokens, num_heads_kv, head_dim,
        num_pages, page_size, pad0);
    assert_eq!(dec_names, header_fields("FLASHMHA_ABI_PROBE_DECODE_FIELDS"));
    assert_eq!(mrg_names, header_fields("FLASHMHA_ABI_PROBE_MERGE_FIELDS"));
    assert_eq!(
        app_names,
        header_fields("FLASHMHA_ABI_PROBE_KV_APPEND_FIELDS")
    );

    let image = module_of("flashmha_abi_probe_decode").expect("probe kernel embedded");
    let module = Module::parse(image.ptx).expect("probe PTX parses");
    let mut dev = Device::new();
    let n = dec.len() + mrg.len() + app.len();
    let out = dev.alloc(n * 8);
    dev.write(out, &vec![0xAB; n * 8]).unwrap();
    let cfg = LaunchConfig {
        grid: [1, 1, 1],
        block: [32, 1, 1],
        dynamic_smem_bytes: 0,
    };
    let report = dev
        .launch(
            &module,
            "flashmha_abi_probe_decode",
            &cfg,
            &out.0.to_le_bytes(),
        )
        .expect("probe runs");
    assert!(report.findings.is_empty(), "{:?}", report.findings);
    let device: Vec<u64> = dev
        .read(out, n * 8)
        .unwrap()
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let (a, b) = (dec.len(), dec.len() + mrg.len());
    assert_eq!(device[..a], dec[..], "FlashDecodeParams: device vs bindgen");
    assert_eq!(
        device[a..b],
        mrg[..],
        "MergeStatesParams: device vs bindgen"
    );
    assert_eq!(device[b..], app[..], "KvAppendParams: device vs bindgen");
}
