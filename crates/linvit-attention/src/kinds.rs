//! The attention kinds and the layout strings that place them: [`Kind`] is the one list of
//! families (its config name, its letter, its default hyper-parameters), and [`Layout::parse`]
//! is the one reader of the papers' layout strings (`LLSS`, `AAAB`, `AAMB2`), for the upstream
//! configs and for ablations alike. A new family is one variant here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{AgentConfig, AttentionConfig, FocusedConfig, LinearConfig, NormConfig, UnknownName};

/// An attention family, named as in configs (`kind = "focused"`) and on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Softmax attention in the backbone's own flavour.
    Softmax,
    /// Plain linear attention with a ReLU kernel (the ablation baseline).
    Linear,
    /// FLatten focused linear attention.
    Focused,
    /// Agent attention.
    Agent,
    /// TransNormer norm-attention.
    Norm,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 5] = [
        Kind::Softmax,
        Kind::Linear,
        Kind::Focused,
        Kind::Agent,
        Kind::Norm,
    ];

    /// The name in configs and reports.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Softmax => "softmax",
            Kind::Linear => "linear",
            Kind::Focused => "focused",
            Kind::Agent => "agent",
            Kind::Norm => "norm",
        }
    }

    /// The letter in layout strings: `S` softmax (the papers also write `B`), `P` plain
    /// linear, `L` focused linear, `A` agent, `N` norm-attention.
    pub fn letter(self) -> char {
        match self {
            Kind::Softmax => 'S',
            Kind::Linear => 'P',
            Kind::Focused => 'L',
            Kind::Agent => 'A',
            Kind::Norm => 'N',
        }
    }

    /// The kind a layout letter stands for.
    pub fn from_letter(letter: char) -> Option<Kind> {
        match letter {
            'B' => Some(Kind::Softmax),
            c => Kind::ALL.into_iter().find(|k| k.letter() == c),
        }
    }

    /// The family's default config (FLatten p = 3, DWC 5; agent 49 agents, DWC 3; plain linear
    /// without DWC).
    pub fn default_config(self) -> AttentionConfig {
        match self {
            Kind::Softmax => AttentionConfig::Softmax,
            Kind::Linear => AttentionConfig::Linear(LinearConfig::default()),
            Kind::Focused => AttentionConfig::Focused(FocusedConfig::default()),
            Kind::Agent => AttentionConfig::Agent(AgentConfig::default()),
            Kind::Norm => AttentionConfig::Norm(NormConfig::default()),
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = UnknownName;

    fn from_str(name: &str) -> Result<Self, UnknownName> {
        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        (Kind::ALL.into_iter().find(|k| k.name() == name)).ok_or_else(|| UnknownName {
            what: "attention kind",
            name: name.to_string(),
            expected: known.join(", "),
        })
    }
}

/// A layout string that cannot be read; the message quotes it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("layout {text:?}: {reason}")]
pub struct LayoutError {
    pub text: String,
    pub reason: String,
}

/// The kind of every block of every stage, read from a layout string.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    blocks: Vec<Vec<Kind>>,
}

impl Layout {
    /// Reads one letter per stage (see [`Kind::letter`]; `B` is softmax too) for stages of
    /// `depths` blocks. A stage letter `M` mixes kinds, as the authors' Swin code reads it: its
    /// first `k` blocks take `mixed`, the rest softmax, with `k` written after the stage letters
    /// (`AAMB2`: stage 3's first 2 blocks agent when `mixed` is agent). `mixed` is the family's
    /// linear kind (focused for FLatten's code, agent for Agent's).
    pub fn parse(text: &str, depths: &[usize], mixed: Kind) -> Result<Layout, LayoutError> {
        let error = |reason: String| LayoutError {
            text: text.to_string(),
            reason,
        };
        let n = depths.len();
        let letters: Vec<char> = text.chars().collect();
        let stage_letters = letters.iter().take_while(|c| c.is_alphabetic()).count();
        if stage_letters != n {
            return Err(error(format!(
                "{stage_letters} letters for {n} stages (one of L, A, P, N, S, B or M per stage)"
            )));
        }
        let count: String = letters[n..].iter().collect();
        if !count.is_empty() && !letters[..n].contains(&'M') {
            return Err(error(format!("a block count ({count}) needs an M stage")));
        }
        let first = match count.as_str() {
            "" => None,
            digits => Some(
                digits
                    .parse::<usize>()
                    .map_err(|_| error(format!("{digits:?} is not a block count")))?,
            ),
        };
        let blocks = (letters[..n].iter().zip(depths))
            .map(|(&letter, &depth)| match (letter, first) {
                ('M', Some(k)) => Ok((0..depth)
                    .map(|j| if j < k { mixed } else { Kind::Softmax })
                    .collect()),
                ('M', None) => Err(error("M needs a block count after the stages".into())),
                (c, _) => Kind::from_letter(c).map(|k| vec![k; depth]).ok_or_else(|| {
                    error(format!(
                        "unknown mixer letter {c:?} (expected L, A, P, N, S, B or M)"
                    ))
                }),
            })
            .collect::<Result<_, _>>()?;
        Ok(Layout { blocks })
    }

    /// The kinds of stage `i`'s blocks.
    pub fn stage(&self, i: usize) -> &[Kind] {
        &self.blocks[i]
    }

    /// The kind of each stage, where every stage holds one kind; `None` for a mixed stage.
    pub fn stage_kinds(&self) -> Option<Vec<Kind>> {
        (self.blocks.iter())
            .map(|b| match b.as_slice() {
                [] => Some(Kind::Softmax),
                [first, rest @ ..] => rest.iter().all(|k| k == first).then_some(*first),
            })
            .collect()
    }

    /// Every kind the layout uses.
    pub fn kinds(&self) -> impl Iterator<Item = Kind> + '_ {
        self.blocks.iter().flatten().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_is_its_default_configs_kind_and_reads_back() {
        for kind in Kind::ALL {
            assert_eq!(kind.default_config().kind(), kind);
            assert_eq!(kind.name().parse::<Kind>(), Ok(kind));
            assert_eq!(Kind::from_letter(kind.letter()), Some(kind));
        }
        assert_eq!(Kind::from_letter('B'), Some(Kind::Softmax));
        assert_eq!(Kind::from_letter('X'), None);
        let err = "softmx".parse::<Kind>().unwrap_err().to_string();
        assert!(
            err.contains("\"softmx\"") && err.contains("focused"),
            "{err}"
        );
    }

    #[test]
    fn a_layout_gives_each_stage_its_kind() {
        let l = Layout::parse("LLSB", &[2, 2, 6, 2], Kind::Focused).unwrap();
        use Kind::*;
        assert_eq!(
            l.stage_kinds(),
            Some(vec![Focused, Focused, Softmax, Softmax])
        );
        assert_eq!(l.stage(2), &[Softmax; 6]);
        let l = Layout::parse("PANS", &[1, 1, 1, 1], Focused).unwrap();
        assert_eq!(l.stage_kinds(), Some(vec![Linear, Agent, Norm, Softmax]));
    }

    #[test]
    fn m_mixes_the_family_kind_into_its_first_blocks() {
        let l = Layout::parse("AAMB2", &[2, 2, 6, 2], Kind::Agent).unwrap();
        use Kind::*;
        assert_eq!(l.stage(1), &[Agent, Agent]);
        assert_eq!(
            l.stage(2),
            &[Agent, Agent, Softmax, Softmax, Softmax, Softmax]
        );
        assert_eq!(l.stage(3), &[Softmax, Softmax]);
        assert_eq!(l.stage_kinds(), None);
        let l = Layout::parse("LMSS3", &[2, 6, 2, 2], Focused).unwrap();
        assert_eq!(
            l.stage(1),
            &[Focused, Focused, Focused, Softmax, Softmax, Softmax]
        );
    }

    #[test]
    fn bad_layouts_are_errors_that_quote_them() {
        let depths = [2, 2, 6, 2];
        let err = |text| {
            Layout::parse(text, &depths, Kind::Focused)
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("LLS").contains("3 letters for 4 stages"),
            "{}",
            err("LLS")
        );
        assert!(
            err("LLSSS").contains("5 letters for 4 stages"),
            "{}",
            err("LLSSS")
        );
        assert!(
            err("LLXS").contains("unknown mixer letter 'X'"),
            "{}",
            err("LLXS")
        );
        assert!(
            err("LLMS").contains("M needs a block count"),
            "{}",
            err("LLMS")
        );
        assert!(
            err("LLMS2x").contains("\"2x\" is not a block count"),
            "{}",
            err("LLMS2x")
        );
        assert!(
            err("LLSS2").contains("needs an M stage"),
            "{}",
            err("LLSS2")
        );
        assert!(
            err("LLXS").starts_with("layout \"LLXS\""),
            "{}",
            err("LLXS")
        );
    }
}
