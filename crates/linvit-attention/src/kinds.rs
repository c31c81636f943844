//! Every attention kind by its config name, with its family's default hyper-parameters: the one
//! list that `linvit bench attention` and the criterion benches iterate. A new family is one
//! line here.

use crate::{AgentConfig, AttentionConfig, FocusedConfig, LinearConfig, NormConfig};

/// `(kind, default config)` for every family (FLatten p = 3, DWC 5; agent 49 agents, DWC 3;
/// plain linear without DWC).
pub const KINDS: &[(&str, fn() -> AttentionConfig)] = &[
    ("softmax", || AttentionConfig::Softmax),
    (
        "linear",
        || AttentionConfig::Linear(LinearConfig::default()),
    ),
    ("focused", || {
        AttentionConfig::Focused(FocusedConfig::default())
    }),
    ("agent", || AttentionConfig::Agent(AgentConfig::default())),
    ("norm", || AttentionConfig::Norm(NormConfig::default())),
];

/// The default config of a kind name.
pub fn default_config(kind: &str) -> Option<AttentionConfig> {
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, f)| f())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_name_is_its_configs_kind() {
        for (name, config) in KINDS {
            assert_eq!(config().kind(), *name);
        }
        assert_eq!(default_config("nope"), None);
    }
}
