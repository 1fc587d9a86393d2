//! The judge's quantity `log p(A) − log p(B)` for the next token, from a server's top-k list.
//!
//! A server lists only its top-k next tokens. An option missing from that list still has a
//! log-probability, only an unknown one; all we know is that it is at most the smallest listed
//! log-probability `f = min_{top-k} log p` (the list is the k most likely tokens). So:
//!
//! | `A` | `B` | margin `m = log p(A) − log p(B)` |
//! |-----|-----|-----------------------------------|
//! | listed `a` | listed `b` | exactly `a − b` |
//! | listed `a` | absent | `m ≥ a − f` (a lower bound) |
//! | absent | listed `b` | `m ≤ f − b` (an upper bound) |
//! | absent | absent | unknown (both `≤ f`) |
//!
//! Options are matched to listed tokens by exact text (so `"A"` and `" A"` differ: pass the
//! option as the tokenizer spells it after the prompt's cue). When two listed entries share a
//! text, the likelier is taken. For exact values whatever the top-k, score each option token as a
//! one-token continuation ([`super::Client::option_logprobs_exact`]).

/// One option's next-token log-probability as far as the server's list shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionLogprob {
    /// Listed: its log-probability.
    Listed(f64),
    /// Not in the top-k: at most this value, the smallest listed log-probability
    /// (`-inf` when the list was empty).
    AtMost(f64),
}

impl OptionLogprob {
    /// The exact value when listed.
    pub fn exact(self) -> Option<f64> {
        match self {
            Self::Listed(v) => Some(v),
            Self::AtMost(_) => None,
        }
    }
}

/// `log p(A) − log p(B)`, exact or bounded on one side.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Margin {
    /// Both options listed.
    Exact(f64),
    /// Only `A` listed: the margin is at least this.
    AtLeast(f64),
    /// Only `B` listed: the margin is at most this.
    AtMost(f64),
    /// Neither listed: no information about the margin.
    Unknown,
}

impl Margin {
    /// The exact margin, if known.
    pub fn exact(self) -> Option<f64> {
        match self {
            Self::Exact(v) => Some(v),
            _ => None,
        }
    }

    /// The exact value or the bound itself: a conservative point value whose magnitude
    /// understates the true `|m|` when it is a bound (it has the right sign whenever the bound is
    /// on the side away from zero, e.g. `AtLeast(x)` with `x > 0`). `None` when unknown.
    pub fn conservative(self) -> Option<f64> {
        match self {
            Self::Exact(v) | Self::AtLeast(v) | Self::AtMost(v) => Some(v),
            Self::Unknown => None,
        }
    }

    /// Whether the sign of the margin (which option the judge prefers) is certain:
    /// exact and non-zero, or a bound that excludes zero.
    pub fn sign_known(self) -> bool {
        match self {
            Self::Exact(v) => v != 0.0,
            Self::AtLeast(v) => v > 0.0,
            Self::AtMost(v) => v < 0.0,
            Self::Unknown => false,
        }
    }
}

/// Both options and their margin.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionComparison {
    /// Option `A`.
    pub a: OptionLogprob,
    /// Option `B`.
    pub b: OptionLogprob,
    /// `log p(A) − log p(B)`.
    pub margin: Margin,
}

impl OptionComparison {
    /// Both exact.
    pub fn exact(a: f64, b: f64) -> Self {
        Self {
            a: OptionLogprob::Listed(a),
            b: OptionLogprob::Listed(b),
            margin: Margin::Exact(a - b),
        }
    }

    /// From a top-k list `(text, log-prob)` (any order) and the options' texts.
    pub fn from_top(top: &[(String, f64)], a: &str, b: &str) -> Self {
        let floor = top.iter().map(|t| t.1).fold(f64::INFINITY, f64::min);
        let floor = if top.is_empty() {
            f64::NEG_INFINITY
        } else {
            floor
        };
        let find = |text: &str| {
            top.iter()
                .filter(|t| t.0 == text)
                .map(|t| t.1)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .map_or(OptionLogprob::AtMost(floor), OptionLogprob::Listed)
        };
        let (pa, pb) = (find(a), find(b));
        let margin = match (pa, pb) {
            (OptionLogprob::Listed(x), OptionLogprob::Listed(y)) => Margin::Exact(x - y),
            (OptionLogprob::Listed(x), OptionLogprob::AtMost(f)) => Margin::AtLeast(x - f),
            (OptionLogprob::AtMost(f), OptionLogprob::Listed(y)) => Margin::AtMost(f - y),
            _ => Margin::Unknown,
        };
        Self {
            a: pa,
            b: pb,
            margin,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn top() -> Vec<(String, f64)> {
        vec![
            ("A".into(), -0.5),
            ("B".into(), -1.5),
            (" A".into(), -2.0),
            ("C".into(), -3.0),
        ]
    }

    #[test]
    fn both_listed_is_exact() {
        let c = OptionComparison::from_top(&top(), "A", "B");
        assert_eq!(c.margin, Margin::Exact(1.0));
        assert!(c.margin.sign_known());
    }

    /// Whether `m` is consistent with `margin`.
    fn holds(margin: Margin, m: f64) -> bool {
        match margin {
            Margin::Exact(v) => (v - m).abs() < 1e-12,
            Margin::AtLeast(v) => m >= v,
            Margin::AtMost(v) => m <= v,
            Margin::Unknown => true,
        }
    }

    #[test]
    fn absent_option_gives_a_bound_that_holds() {
        let c = OptionComparison::from_top(&top(), "A", "D");
        assert_eq!(c.b, OptionLogprob::AtMost(-3.0));
        assert_eq!(c.margin, Margin::AtLeast(2.5));
        let c = OptionComparison::from_top(&top(), "D", " A");
        assert_eq!(c.margin, Margin::AtMost(-1.0));
        assert!(c.margin.sign_known());
        let c = OptionComparison::from_top(&top(), "D", "E");
        assert_eq!(c.margin, Margin::Unknown);
        assert_eq!(c.margin.conservative(), None);
        assert!(!c.margin.sign_known());
    }

    #[test]
    fn bounds_hold_for_every_pair_of_a_full_distribution() {
        // A full (unnormalised is fine) distribution over 12 tokens; the server lists the top k.
        let full: Vec<(String, f64)> = (0..12)
            .map(|i| {
                (
                    format!("t{i}"),
                    -0.3 * f64::from(i) - 0.01 * f64::from(i * i),
                )
            })
            .collect();
        for k in 1..=12 {
            let listed = &full[..k];
            for (a, la) in &full {
                for (b, lb) in &full {
                    let c = OptionComparison::from_top(listed, a, b);
                    assert!(holds(c.margin, la - lb), "k={k} {a} {b}: {c:?}");
                }
            }
        }
    }

    #[test]
    fn duplicate_texts_take_the_likelier() {
        let mut t = top();
        t.push(("B".into(), -0.1));
        let c = OptionComparison::from_top(&t, "A", "B");
        assert_eq!(c.b, OptionLogprob::Listed(-0.1));
    }

    #[test]
    fn empty_list_bounds_at_minus_infinity() {
        let c = OptionComparison::from_top(&[], "A", "B");
        assert_eq!(c.a, OptionLogprob::AtMost(f64::NEG_INFINITY));
        assert_eq!(c.margin, Margin::Unknown);
    }
}
