//! Swapping the mixers of a built config for ablations: a layout string (`LLSS`, one letter per
//! stage, or per block for ViT) and/or one attention config for every non-softmax place. The
//! rules every family shares are here; each family's placement (`swap_mixers`) is in its file.
//!
//! Letters: `L` focused linear, `A` agent, `P` plain linear, `N` TransNormer norm-attention,
//! `S`/`B` the backbone's softmax.
//! A letter takes its hyper-parameters from the given attention when the kinds agree, else from
//! the mixer already there when the kinds agree, else the kind's defaults. Where the kind changes,
//! the placement follows the authors' configs: linear and agent stages of Swin and CSwin see the
//! whole stage and PVT linear stages use no spatial reduction; softmax stages get Swin's window 7,
//! CSwin's stripes `[1, 2, 7, 7]` and PVT's reductions `[8, 4, 2, 1]` (each only where it divides
//! the grid, else the whole grid / no reduction).

use linvit_attention::{AttentionConfig, Kind, Layout};

use crate::model_error;
use crate::ModelConfig;
use crate::ModelError;

/// The mixer for `kind`, preferring `given`, then `current`, then the kind's defaults.
pub(crate) fn pick(
    kind: Kind,
    given: Option<&AttentionConfig>,
    current: &AttentionConfig,
) -> AttentionConfig {
    match given {
        Some(g) if g.kind() == kind => g.clone(),
        _ if current.kind() == kind => current.clone(),
        _ => kind.default_config(),
    }
}

/// Per-stage kinds from a layout (one letter per place, see [`Layout::parse`]), or from the
/// current mixers with `given`'s kind put in every non-softmax place.
pub(crate) fn kinds(
    layout: Option<&str>,
    current: &[Kind],
    given: Option<&AttentionConfig>,
) -> Result<Vec<Kind>, ModelError> {
    match layout {
        Some(l) => Layout::parse(l, &vec![1; current.len()], Kind::Focused)
            .map_err(|e| e.to_string())?
            .stage_kinds()
            .ok_or_else(|| {
                model_error!("layout {l:?}: M (mixed blocks) is for upstream Swin configs")
            }),
        None => Ok(current
            .iter()
            .map(|&k| match given {
                Some(g) if g.kind() == Kind::Softmax => Kind::Softmax,
                Some(g) if k != Kind::Softmax => g.kind(),
                _ => k,
            })
            .collect()),
    }
}

/// Swaps one mixer per stage (PVT, CSwin) as `layout` and `given` say; `place(i, new)` sets
/// stage `i`'s placement (reduction, stripe) where its kind changes to `new`'s.
pub(crate) fn swap_per_stage(
    stages: &mut [AttentionConfig],
    layout: Option<&str>,
    given: Option<&AttentionConfig>,
    mut place: impl FnMut(usize, &AttentionConfig),
) -> Result<(), ModelError> {
    let current: Vec<Kind> = stages.iter().map(AttentionConfig::kind).collect();
    for (i, kind) in kinds(layout, &current, given)?.into_iter().enumerate() {
        let new = pick(kind, given, &stages[i]);
        if new.kind() != stages[i].kind() {
            place(i, &new);
        }
        stages[i] = new;
    }
    Ok(())
}

/// The placement of a stage turned `new`: `standard` for softmax where it divides the stage's
/// grid side, else `otherwise`.
pub(crate) fn softmax_or(
    new: &AttentionConfig,
    side: usize,
    standard: usize,
    otherwise: usize,
) -> usize {
    if *new == AttentionConfig::Softmax && divides(side, standard) {
        standard
    } else {
        otherwise
    }
}

pub(crate) fn divides(grid: usize, by: usize) -> bool {
    by > 0 && grid.is_multiple_of(by)
}

impl ModelConfig {
    /// This config with its mixers replaced as `layout` and `attention` say (see the module
    /// docs); `None, None` returns it unchanged.
    pub fn with_mixers(
        mut self,
        layout: Option<&str>,
        attention: Option<&AttentionConfig>,
    ) -> Result<Self, ModelError> {
        if layout.is_none() && attention.is_none() {
            return Ok(self);
        }
        match &mut self {
            ModelConfig::Vit(c) => c.swap_mixers(layout, attention)?,
            ModelConfig::Pvt(c) => c.swap_mixers(layout, attention)?,
            ModelConfig::Swin(c) => c.swap_mixers(layout, attention)?,
            ModelConfig::Cswin(c) => c.swap_mixers(layout, attention)?,
        }
        self.validate()?;
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::presets::preset;
    use linvit_attention::{AgentConfig, FocusedConfig};

    #[test]
    fn a_layout_switches_stages_and_their_placement() {
        let base = preset("flatten_swin_t").unwrap().config();
        let ModelConfig::Swin(all_linear) = base.clone().with_mixers(Some("LLLL"), None).unwrap()
        else {
            unreachable!()
        };
        assert!(all_linear.attention[3]
            .iter()
            .all(|a| a.kind() == Kind::Focused));
        assert_eq!(
            all_linear.windows[2][0], 14,
            "a linear stage sees its whole grid"
        );
        let ModelConfig::Swin(softmax) = base.with_mixers(Some("SSSS"), None).unwrap() else {
            unreachable!()
        };
        assert_eq!(softmax.windows[0][0], 7);
        assert!(softmax
            .attention
            .iter()
            .flatten()
            .all(|a| *a == AttentionConfig::Softmax));
    }

    #[test]
    fn one_attention_replaces_every_linear_place_and_keeps_softmax_stages() {
        let agent = AttentionConfig::Agent(AgentConfig {
            agent_num: 16,
            dwc_kernel: 3,
        });
        let ModelConfig::Pvt(c) = preset("tiny_flatten_pvt")
            .unwrap()
            .config()
            .with_mixers(None, Some(&agent))
            .unwrap()
        else {
            unreachable!()
        };
        assert!(c.attention.iter().all(|a| *a == agent));
        let focused4 = AttentionConfig::Focused(FocusedConfig {
            focusing_factor: 4,
            kernel_size: 3,
        });
        let ModelConfig::Swin(s) = preset("flatten_swin_t")
            .unwrap()
            .config()
            .with_mixers(None, Some(&focused4))
            .unwrap()
        else {
            unreachable!()
        };
        assert_eq!(s.attention[0][0], focused4);
        assert_eq!(s.attention[3][0], AttentionConfig::Softmax);
    }

    #[test]
    fn a_layout_of_the_wrong_length_or_letter_is_an_error() {
        let base = preset("tiny_flatten_pvt").unwrap().config();
        assert!(base
            .clone()
            .with_mixers(Some("LLS"), None)
            .unwrap_err()
            .message
            .contains("3 letters for 4 stages"));
        assert!(base
            .with_mixers(Some("LLXS"), None)
            .unwrap_err()
            .message
            .contains("'X'"));
    }
}
