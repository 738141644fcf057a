//! Shared C ABI boilerplate of the integration tests: a padded `flashmha_shape`, a
//! `flashmha_buf` over a host slice or a raw (device) address, and a plan made through the C
//! entry point. (A module of the `ops` test binary.)

#![allow(dead_code)]

use flashmha::capi::{ffi, flashmha_plan_create, flashmha_plan_create_for_context};
use std::ffi::c_void;

/// A padded, contiguous forward shape with default options.
pub fn padded_shape(
    dtype: ffi::flashmha_dtype,
    (seqlen_q, seqlen_k): (usize, usize),
    (heads_q, heads_kv): (usize, usize),
    head_dim: usize,
) -> ffi::flashmha_shape {
    ffi::flashmha_shape {
        dtype,
        batch: 1,
        seqlen_q,
        seqlen_k,
        heads_q,
        heads_kv,
        head_dim,
        ..Default::default()
    }
}

/// The whole of a host slice as a C buffer (its element count as the length).
pub fn buf<T>(x: &mut [T]) -> ffi::flashmha_buf {
    raw_buf(x.as_mut_ptr().cast(), x.len())
}

/// A C buffer of `len` elements at `data` (host or device address).
pub fn raw_buf(data: *mut c_void, len: usize) -> ffi::flashmha_buf {
    ffi::flashmha_buf {
        data,
        len: len as _,
    }
}

/// A forward plan of `s` made by the C entry point (for `ctx`'s device when given), which must
/// succeed.
pub fn plan(
    s: &ffi::flashmha_shape,
    ctx: Option<*mut ffi::flashmha_context>,
) -> *mut ffi::flashmha_plan {
    let mut plan: *mut ffi::flashmha_plan = std::ptr::null_mut();
    // SAFETY: valid pointers to locals; `ctx` is a live context when given.
    let code = unsafe {
        match ctx {
            Some(c) => flashmha_plan_create_for_context(c, s, &mut plan),
            None => flashmha_plan_create(s, &mut plan),
        }
    };
    assert_eq!(code, ffi::FLASHMHA_OK, "flashmha_plan_create");
    plan
}
