//! Rounding f32 data through the kernel's 16-bit dtypes, so the reference sees exactly the
//! values the kernel reads (and so tests can model the kernel's own rounding steps).

use crate::common::dtype::DType;

/// Rounds every element of `xs` through `ty`, returning the rounded values as f32.
pub fn round_slice(xs: &[f32], ty: DType) -> Vec<f32> {
    xs.iter().map(|&x| ty.round(x)).collect()
}

/// Rounds every element of `xs` through `ty` in place.
pub fn round_in_place(xs: &mut [f32], ty: DType) {
    for x in xs {
        *x = ty.round(*x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn unit_roundoff_is_half_of_the_type_epsilon() {
        // half's EPSILON is the gap above 1, i.e. 2u.
        assert_eq!(
            DType::F16.unit_roundoff(),
            f64::from(half::f16::EPSILON.to_f32()) / 2.0
        );
        assert_eq!(
            DType::Bf16.unit_roundoff(),
            f64::from(half::bf16::EPSILON.to_f32()) / 2.0
        );
    }

    #[test]
    fn in_place_and_copying_rounding_agree() {
        let xs = [0.1f32, -3.3, 1e-3, 65504.0, 1.0 / 3.0];
        for ty in [DType::F16, DType::Bf16] {
            let mut ys = xs;
            round_in_place(&mut ys, ty);
            assert_eq!(ys.to_vec(), round_slice(&xs, ty));
            // 1/3 is not representable in either type, so rounding must change it.
            assert_ne!(ys[4], xs[4]);
        }
    }

    proptest! {
        #[test]
        fn rounding_error_is_within_unit_roundoff(x in prop_oneof![-60000f32..-1e-4, 1e-4f32..60000.0]) {
            for ty in [DType::F16, DType::Bf16] {
                let r = ty.round(x);
                let rel = (f64::from(r) - f64::from(x)).abs() / f64::from(x).abs();
                prop_assert!(rel <= ty.unit_roundoff(), "{ty:?}: {x} -> {r}, rel {rel}");
                // Rounding is idempotent: a rounded value is representable.
                prop_assert_eq!(ty.round(r), r);
            }
        }
    }
}
