//! From the C structs of `include/flashmha.h` to the Rust API's types: a `flashmha_shape`
//! becomes a dtype and a [`FwdShape`], a `flashmha_bufs` becomes [`FwdBufs`]. Pure; reads only
//! the structs it is given.

use super::ffi;
use super::status::CallError;
use crate::common::binding::DevBuf;
use crate::common::dtype::DType;
use crate::common::geometry::Strides;
use crate::common::options::{AttnOptions, SlidingWindow};
use crate::ops::forward::bind::FwdBufs;
use crate::ops::forward::problem::{FwdShape, Heads, QkvoStrides, SeqShape};

fn invalid(msg: impl Into<String>) -> CallError {
    CallError::InvalidArgument(msg.into())
}

pub fn dtype(d: ffi::flashmha_dtype) -> Result<DType, CallError> {
    match d {
        ffi::FLASHMHA_DTYPE_F16 => Ok(DType::F16),
        ffi::FLASHMHA_DTYPE_BF16 => Ok(DType::Bf16),
        other => Err(invalid(format!("dtype {other} is not a flashmha_dtype"))),
    }
}

fn strides(s: ffi::flashmha_strides) -> Strides {
    Strides {
        batch: s.batch,
        row: s.row,
        head: s.head,
    }
}

fn window_bound(name: &str, v: i64) -> Result<Option<u32>, CallError> {
    if v < 0 {
        return Ok(None);
    }
    u32::try_from(v)
        .map(Some)
        .map_err(|_| invalid(format!("{name} = {v} does not fit in 32 bits")))
}

pub fn options(o: &ffi::flashmha_options) -> Result<AttnOptions, CallError> {
    // 0 selects the default; any other value goes to validation as given (so a negative or
    // NaN scale is a typed FLASHMHA_ERR_INVALID_OPTION, not silently the default).
    let optional = |v: f32| (v != 0.0).then_some(v);
    let window = if o.window != 0 {
        Some(SlidingWindow {
            left: window_bound("window_left", o.window_left)?,
            right: window_bound("window_right", o.window_right)?,
        })
    } else {
        None
    };
    Ok(AttnOptions {
        softmax_scale: optional(o.softmax_scale),
        causal: o.causal != 0,
        window,
        softcap: optional(o.softcap),
    })
}

/// The dtype and the shape a `flashmha_shape` describes.
pub fn shape(s: &ffi::flashmha_shape) -> Result<(DType, FwdShape), CallError> {
    let dtype = dtype(s.dtype)?;
    let heads = Heads {
        q: s.heads_q,
        kv: s.heads_kv,
    };
    let seq = if s.varlen != 0 {
        SeqShape::Varlen {
            batch: s.batch,
            max_seqlen_q: s.seqlen_q,
            max_seqlen_k: s.seqlen_k,
            total_q: s.total_q,
            total_k: s.total_k,
        }
    } else {
        SeqShape::Padded {
            batch: s.batch,
            seqlen_q: s.seqlen_q,
            seqlen_k: s.seqlen_k,
        }
    };
    let mut shape = match seq {
        SeqShape::Padded {
            batch,
            seqlen_q,
            seqlen_k,
        } => FwdShape::padded(batch, seqlen_q, seqlen_k, heads, s.head_dim),
        SeqShape::Varlen { .. } => FwdShape::varlen(seq, heads, s.head_dim),
    }
    .with_options(options(&s.options)?);
    let given = [s.q_strides, s.k_strides, s.v_strides, s.o_strides];
    let all_zero = given
        .iter()
        .all(|t| t.batch == 0 && t.row == 0 && t.head == 0);
    if !all_zero {
        shape = shape.with_strides(QkvoStrides {
            q: strides(s.q_strides),
            k: strides(s.k_strides),
            v: strides(s.v_strides),
            o: strides(s.o_strides),
        });
    }
    Ok((dtype, shape))
}

/// NULL is the absent buffer (address 0).
fn buf(b: ffi::flashmha_buf) -> DevBuf {
    DevBuf::new(b.data as u64, b.len)
}

/// The buffers as the plan's `bind` checks them. Required buffers are passed on even when NULL
/// (bind reports a NULL q/k/v/o as a missing buffer); the cu_seqlens must come as a pair.
pub fn bufs(b: &ffi::flashmha_bufs) -> Result<FwdBufs, CallError> {
    if b.cu_seqlens_q.data.is_null() != b.cu_seqlens_k.data.is_null() {
        return Err(invalid(
            "cu_seqlens_q and cu_seqlens_k must both be given or both be NULL",
        ));
    }
    Ok(FwdBufs {
        q: buf(b.q),
        k: buf(b.k),
        v: buf(b.v),
        o: buf(b.o),
        lse: buf(b.lse),
        entropy: buf(b.entropy),
        alibi_slopes: buf(b.alibi_slopes),
        head_gates: buf(b.head_gates),
        cu_seqlens_q: buf(b.cu_seqlens_q),
        cu_seqlens_k: buf(b.cu_seqlens_k),
    })
}

/// `*ptr`, or an invalid-argument error naming `what` when it is NULL.
///
/// # Safety
/// A non-NULL `ptr` must point to a valid `T` for the returned lifetime.
pub unsafe fn deref<'a, T>(ptr: *const T, what: &str) -> Result<&'a T, CallError> {
    // SAFETY: the caller's contract; NULL is handled.
    unsafe { ptr.as_ref() }.ok_or_else(|| invalid(format!("{what} is NULL")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> ffi::flashmha_shape {
        ffi::flashmha_shape {
            dtype: ffi::FLASHMHA_DTYPE_BF16,
            batch: 2,
            seqlen_q: 5,
            seqlen_k: 7,
            heads_q: 4,
            heads_kv: 2,
            head_dim: 64,
            ..Default::default()
        }
    }

    #[test]
    fn a_zeroed_shape_is_contiguous_with_default_options() {
        let (dt, s) = shape(&base()).unwrap();
        assert_eq!(dt, DType::Bf16);
        assert_eq!(s, FwdShape::padded(2, 5, 7, Heads::gqa(4, 2), 64));
    }

    #[test]
    fn options_and_strides_are_taken_as_given() {
        let mut c = base();
        c.options = ffi::flashmha_options {
            softmax_scale: 0.25,
            softcap: 0.0,
            causal: 1,
            window: 1,
            window_left: 3,
            window_right: -1,
        };
        let st = ffi::flashmha_strides {
            batch: 1000,
            row: 72 * 4,
            head: 72,
        };
        c.q_strides = st;
        c.o_strides = st;
        let (_, s) = shape(&c).unwrap();
        assert_eq!(s.options.softmax_scale, Some(0.25));
        assert_eq!(s.options.softcap, None);
        assert!(s.options.causal);
        assert_eq!(
            s.options.window,
            Some(SlidingWindow {
                left: Some(3),
                right: None
            })
        );
        assert_eq!(s.strides.q.row, 288);
        // Given as all-zero: taken as given too (validation decides), not replaced.
        assert_eq!(s.strides.k, Strides::default());
        c.dtype = 7;
        assert!(matches!(shape(&c), Err(CallError::InvalidArgument(_))));
        c.dtype = ffi::FLASHMHA_DTYPE_F16;
        c.options.window_left = 1 << 40;
        assert!(matches!(shape(&c), Err(CallError::InvalidArgument(_))));
    }

    #[test]
    fn a_lone_cu_seqlens_is_rejected() {
        let mut b = ffi::flashmha_bufs::default();
        let mut x = [0i32; 3];
        b.cu_seqlens_q = ffi::flashmha_buf {
            data: x.as_mut_ptr().cast(),
            len: 3,
        };
        assert!(matches!(bufs(&b), Err(CallError::InvalidArgument(_))));
        b.cu_seqlens_k = b.cu_seqlens_q;
        let f = bufs(&b).unwrap();
        assert_eq!((f.cu_seqlens_q.len, f.cu_seqlens_k.len), (3, 3));
        assert!(!f.lse.is_present());
    }
}
