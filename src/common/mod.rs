//! What every op shares: element types ([`dtype`], [`element`]), the kernel family
//! ([`target`]), attention options ([`options`]), the typed errors ([`error`]), shared geometry
//! (strides, page strides, grid and index limits: [`geometry`]), buffer binding
//! checks ([`binding`]), the launch contract ([`launch`]), the launch-parameter ABI generated from `kernels/params.h` ([`abi`]) and
//! the kernel registry generated from the kernel tables ([`build_info`]).

pub mod abi;
pub mod binding;
pub mod build_info;
pub mod dtype;
pub mod element;
pub mod error;
pub mod geometry;
pub mod launch;
pub mod options;
pub mod options_abi;
pub mod target;
