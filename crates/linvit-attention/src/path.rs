//! Which implementation a forward on flex takes: the fused CPU kernels wherever they apply
//! ([`Path::Auto`]), or Burn's tensor ops throughout ([`Path::Ops`]). The op path is the
//! reference every fused kernel is tested against; `linvit verify --path ops` runs it.
//!
//! The choice is per thread and scoped ([`Path::run`]): tests that compare the two paths run in
//! parallel, and a forward runs on the thread that calls it. A fused operation recorded in an
//! autodiff graph keeps its fused backward whichever path is current when `backward` runs.

use std::cell::Cell;

use burn::tensor::DType;
use serde::{Deserialize, Serialize};

/// See the module documentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// Fused CPU kernels on flex in f32, forward and backward; Burn's ops elsewhere.
    #[default]
    Auto,
    /// Burn's ops everywhere.
    Ops,
}

thread_local! {
    static CURRENT: Cell<Path> = const { Cell::new(Path::Auto) };
    static FUSED_NODES: Cell<usize> = const { Cell::new(0) };
}

impl Path {
    /// The path forwards on this thread take now.
    pub fn current() -> Path {
        CURRENT.with(Cell::get)
    }

    /// Runs `f` with `self` as this thread's path, then restores the previous one (also when
    /// `f` panics).
    pub fn run<R>(self, f: impl FnOnce() -> R) -> R {
        struct Restore(Path);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let _restore = Restore(CURRENT.with(|c| c.replace(self)));
        f()
    }

    /// Whether a fused kernel or node may take a tensor of `dtype` on this thread now: f32 on
    /// [`Path::Auto`] (the common part of the inference and the training gates; each adds
    /// its own condition on the tensor).
    pub(crate) fn fused_for(dtype: DType) -> bool {
        dtype == DType::F32 && Path::current() == Path::Auto
    }

    /// How many fused autodiff operations forwards on this thread have recorded so far (each
    /// one where Burn's ops would otherwise have run): how tests and `linvit verify` tell that
    /// the fused path really ran.
    pub fn fused_nodes() -> usize {
        FUSED_NODES.with(Cell::get)
    }

    /// Counts one fused autodiff operation (see [`Path::fused_nodes`]).
    pub(crate) fn count_fused_node() {
        FUSED_NODES.with(|c| c.set(c.get() + 1));
    }

    /// `auto` or `ops`.
    pub fn name(self) -> &'static str {
        match self {
            Path::Auto => "auto",
            Path::Ops => "ops",
        }
    }
}

impl std::str::FromStr for Path {
    type Err = crate::UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Path::Auto),
            "ops" => Ok(Path::Ops),
            other => Err(crate::UnknownName {
                what: "path",
                name: other.to_string(),
                expected: "auto, ops".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_sets_the_path_for_its_closure_only_and_restores_it_after_a_panic() {
        assert_eq!(Path::current(), Path::Auto);
        assert_eq!(Path::Ops.run(Path::current), Path::Ops);
        assert_eq!(Path::Ops.run(|| Path::Auto.run(Path::current)), Path::Auto);
        assert_eq!(Path::current(), Path::Auto);
        let caught = std::panic::catch_unwind(|| Path::Ops.run(|| panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(Path::current(), Path::Auto);
        assert_eq!("ops".parse::<Path>(), Ok(Path::Ops));
        assert!("fast".parse::<Path>().is_err());
    }
}
