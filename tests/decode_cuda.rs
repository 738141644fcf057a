//! The CUDA launch path of paged decode. Without a driver the backend is a typed
//! `Error::NoCudaDriver` (never a panic); with one, random paged cases run through
//! `CudaBackend::decode` and match the candle reference (ignored here: no machine of CI has a
//! GPU). The O(1) checks the CUDA path makes before any launch are the plan's, tested here on
//! addresses alone.

use flashmha::cuda::{driver_present, CudaBackend};
use flashmha::decode::check::{check_outputs, DecodeCase};
use flashmha::decode::gpu::decode_host;
use flashmha::decode::kernels::DECODE_KERNELS;
use flashmha::decode::{plan_decode, DecodeBuffers, DeviceBuf, SplitPolicy};
use flashmha::dtype::DType;
use flashmha::error::{AlignWhat, Error, TensorName};
use rand::SeedableRng;

#[test]
fn without_a_driver_decode_is_a_typed_error_with_one_it_loads() {
    match CudaBackend::new(0) {
        Err(Error::NoCudaDriver { reason }) => {
            assert!(!driver_present());
            assert!(reason.contains("libcuda"), "{reason}");
        }
        // A driver without a usable device is still a typed error, never a panic.
        Err(e) => assert!(driver_present(), "{e}"),
        // With a GPU: the decode, combine, merge and append kernels loaded with the rest.
        Ok(b) => assert!(b.compute_capability().0 >= 8),
    }
}

#[test]
fn the_checks_before_any_launch_are_typed() {
    let case = DecodeCase::uniform(
        DType::F16,
        128,
        2,
        2,
        4,
        1,
        16,
        300,
        SplitPolicy::Count(3),
        1,
    );
    let built = case.build();
    let plan = plan_decode(&built.problem, case.split).unwrap();
    let p = &plan.problem;
    // Addresses only (nothing runs): each buffer in its own 1 MiB slot.
    let slot = |i: u64, len: u64| DeviceBuf {
        addr: (i + 1) << 20,
        len,
    };
    let ws_len = plan.workspace.elems();
    let (po, pl, pe) = plan.carve_workspace(slot(9, ws_len)).unwrap();
    let good = DecodeBuffers {
        q: slot(0, p.q_span(&p.q_strides)),
        k_cache: slot(1, p.cache_span(&p.k_strides)),
        v_cache: slot(2, p.cache_span(&p.v_strides)),
        o: slot(3, p.q_span(&p.o_strides)),
        block_table: slot(4, built.inputs.block_table.len() as u64),
        cache_seqlens: slot(5, 2),
        partial_o: po,
        partial_lse: pl,
        partial_entropy: pe,
        ..Default::default()
    };
    assert!(plan.params(&good).is_ok());
    // The workspace the plan states, and not one element less.
    assert!(matches!(
        plan.carve_workspace(slot(9, ws_len - 1)),
        Err(Error::BufferTooSmall {
            tensor: TensorName::Workspace,
            ..
        })
    ));
    // o written over the V pool.
    let aliased = DecodeBuffers {
        o: DeviceBuf {
            addr: good.v_cache.addr + 64,
            ..good.o
        },
        ..good
    };
    assert!(matches!(
        plan.params(&aliased),
        Err(Error::Alias {
            a: TensorName::O,
            b: TensorName::VCache
        })
    ));
    // A workspace carved at an address that breaks the 16-byte partial-O stores.
    let (po, pl, pe) = plan
        .carve_workspace(DeviceBuf {
            addr: (10 << 20) + 4,
            len: ws_len,
        })
        .unwrap();
    assert!(matches!(
        plan.params(&DecodeBuffers {
            partial_o: po,
            partial_lse: pl,
            partial_entropy: pe,
            ..good
        }),
        Err(Error::Misaligned {
            tensor: TensorName::PartialO,
            what: AlignWhat::Base,
            ..
        })
    ));
    // The block table one row short.
    assert!(matches!(
        plan.params(&DecodeBuffers {
            block_table: slot(4, built.inputs.block_table.len() as u64 - 1),
            ..good
        }),
        Err(Error::BufferTooSmall {
            tensor: TensorName::BlockTable,
            ..
        })
    ));
}

#[test]
#[ignore = "needs a CUDA GPU: cargo test --release --test decode_cuda -- --ignored (FLASHMHA_SEED=n repeats a run)"]
fn random_paged_decode_on_the_gpu_matches_the_reference() {
    let seed = std::env::var("FLASHMHA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed}");
    let backend = CudaBackend::new(0).expect("a CUDA GPU");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let dims: Vec<usize> = DECODE_KERNELS.iter().map(|r| r.head_dim as usize).collect();
    for n in 0..32 {
        let case = DecodeCase::random(&mut rng, &[DType::F16, DType::Bf16], &dims, 700);
        let built = case.build();
        let plan = plan_decode(&built.problem, case.split).unwrap();
        let out = decode_host(&backend, &plan, &built.inputs).unwrap();
        let (failures, _) =
            check_outputs(&built, &out.o, out.lse.as_deref(), out.entropy.as_deref());
        assert!(
            failures.is_empty(),
            "case {n} ({}), seed {seed}: {failures:?}",
            case.describe()
        );
    }
}
