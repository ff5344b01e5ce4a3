//! Weight formulas: a pool's `weight = EXPR`, as the compiler lowers it and the
//! control module evaluates it on each load report of a back end's agent.
//!
//! The formula is computed in `f64` from the report ([`Load`]) and the back
//! end's static weight. Its result becomes a weight by one rule for every case
//! ([`weight`]): a finite result is rounded to the nearest whole number and
//! held between 0 and [`MAX_WEIGHT`]; a result that is no number (a division by
//! zero at run time, 0/0, an overflow to infinity) is [`Undefined`], and the
//! control module then keeps the back end's static weight and counts it.

use std::fmt;

/// The largest weight, as for a `backend ... weight N` line.
pub const MAX_WEIGHT: u32 = 65_535;

/// An input of a weight formula.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Input {
    /// Clients the back end serves.
    Clients,
    /// CPU utilisation, 0 to 1.
    Cpu,
    /// Memory utilisation, 0 to 1.
    Mem,
    /// Mean time to execute a request, in milliseconds.
    ExecMs,
    /// Requests per second.
    Rps,
    /// The back end's static weight.
    Weight,
}

impl Input {
    /// Every input, in the order of the language reference.
    pub const ALL: [Input; 6] = [
        Input::Clients,
        Input::Cpu,
        Input::Mem,
        Input::ExecMs,
        Input::Rps,
        Input::Weight,
    ];

    /// The name a formula uses.
    pub fn name(self) -> &'static str {
        match self {
            Input::Clients => "clients",
            Input::Cpu => "cpu",
            Input::Mem => "mem",
            Input::ExecMs => "exec_ms",
            Input::Rps => "rps",
            Input::Weight => "weight",
        }
    }

    /// The input named `name`.
    pub fn from_name(name: &str) -> Option<Input> {
        Input::ALL.into_iter().find(|i| i.name() == name)
    }
}

/// A lowered weight formula.
#[derive(Clone, Debug, PartialEq)]
pub enum Formula {
    Num(f64),
    Input(Input),
    Neg(Box<Formula>),
    Add(Box<Formula>, Box<Formula>),
    Sub(Box<Formula>, Box<Formula>),
    Mul(Box<Formula>, Box<Formula>),
    Div(Box<Formula>, Box<Formula>),
}

/// One load report of a back end, as the formula reads it.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Load {
    pub clients: f64,
    pub cpu: f64,
    pub mem: f64,
    pub exec_ms: f64,
    pub rps: f64,
}

/// Why a value cannot be a load's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadValue {
    /// No load value has that name.
    UnknownKey,
    /// Not a finite number >= 0, or (for `cpu` and `mem`) above 1.
    OutOfRange(&'static str),
}

impl Load {
    /// The names of a load's values (in reports and on `lbp agent --load`), in
    /// the order of [`Load::field_mut`].
    pub const KEYS: [&'static str; 5] = ["clients", "cpu", "mem", "exec_ms", "rps"];

    /// The value named `KEYS[i]` (`i` below 5).
    pub fn field_mut(&mut self, i: usize) -> &mut f64 {
        match i {
            0 => &mut self.clients,
            1 => &mut self.cpu,
            2 => &mut self.mem,
            3 => &mut self.exec_ms,
            _ => &mut self.rps,
        }
    }

    /// The values in the order of [`Load::KEYS`].
    pub fn values(&self) -> [f64; 5] {
        [self.clients, self.cpu, self.mem, self.exec_ms, self.rps]
    }

    /// Set the value named `key` to `v`, which must be a finite number >= 0,
    /// at most 1 for `cpu` and `mem`; returns the key's index in [`Load::KEYS`].
    pub fn set(&mut self, key: &str, v: f64) -> Result<usize, BadValue> {
        let i = Load::KEYS
            .iter()
            .position(|&k| k == key)
            .ok_or(BadValue::UnknownKey)?;
        if !v.is_finite() || v < 0.0 {
            return Err(BadValue::OutOfRange("is not a finite number >= 0"));
        }
        if (key == "cpu" || key == "mem") && v > 1.0 {
            return Err(BadValue::OutOfRange("above 1"));
        }
        *self.field_mut(i) = v;
        Ok(i)
    }
}

impl Formula {
    /// The formula's value for `load` and the static weight `weight`, as a
    /// plain `f64` (possibly NaN or infinite).
    pub fn eval(&self, load: &Load, weight: u32) -> f64 {
        match self {
            Formula::Num(v) => *v,
            Formula::Input(i) => match i {
                Input::Clients => load.clients,
                Input::Cpu => load.cpu,
                Input::Mem => load.mem,
                Input::ExecMs => load.exec_ms,
                Input::Rps => load.rps,
                Input::Weight => f64::from(weight),
            },
            Formula::Neg(a) => -a.eval(load, weight),
            Formula::Add(a, b) => a.eval(load, weight) + b.eval(load, weight),
            Formula::Sub(a, b) => a.eval(load, weight) - b.eval(load, weight),
            Formula::Mul(a, b) => a.eval(load, weight) * b.eval(load, weight),
            Formula::Div(a, b) => a.eval(load, weight) / b.eval(load, weight),
        }
    }
}

/// A formula's result that is no number: NaN or infinite.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Undefined;

impl fmt::Display for Undefined {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the weight formula's result is not a number")
    }
}

/// The weight a formula gives for `load` and the static weight `weight`: its
/// value rounded to the nearest whole number (halves away from zero), below 0
/// taken as 0 and above [`MAX_WEIGHT`] as `MAX_WEIGHT`; [`Undefined`] when the
/// value is NaN or infinite.
pub fn weight(f: &Formula, load: &Load, static_weight: u32) -> Result<u32, Undefined> {
    let v = f.eval(load, static_weight);
    if !v.is_finite() {
        return Err(Undefined);
    }
    Ok(v.round().clamp(0.0, f64::from(MAX_WEIGHT)) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(v: f64) -> Box<Formula> {
        Box::new(Formula::Num(v))
    }

    fn i(x: Input) -> Box<Formula> {
        Box::new(Formula::Input(x))
    }

    /// `weight * (1 - cpu) * 100 / (1 + clients)`, the language brief's example.
    fn example() -> Formula {
        Formula::Div(
            Box::new(Formula::Mul(
                Box::new(Formula::Mul(
                    i(Input::Weight),
                    Box::new(Formula::Sub(n(1.0), i(Input::Cpu))),
                )),
                n(100.0),
            )),
            Box::new(Formula::Add(n(1.0), i(Input::Clients))),
        )
    }

    #[test]
    fn the_brief_example() {
        let load = Load {
            clients: 4.0,
            cpu: 0.5,
            ..Load::default()
        };
        // 3 * 0.5 * 100 / 5 = 30
        assert_eq!(weight(&example(), &load, 3), Ok(30));
        assert_eq!(weight(&example(), &Load::default(), 1), Ok(100));
    }

    #[test]
    fn defined_results_at_the_edges() {
        let l = Load::default();
        // Rounding, halves away from zero.
        assert_eq!(weight(&Formula::Num(2.5), &l, 1), Ok(3));
        assert_eq!(weight(&Formula::Num(2.49), &l, 1), Ok(2));
        // Below zero is 0, above the largest weight is the largest weight.
        assert_eq!(weight(&Formula::Neg(n(7.0)), &l, 1), Ok(0));
        assert_eq!(weight(&Formula::Num(1e300), &l, 1), Ok(MAX_WEIGHT));
        // A division by zero at run time (rps = 0), 0/0 and an overflow to
        // infinity are undefined.
        let per_rps = Formula::Div(n(1.0), i(Input::Rps));
        assert_eq!(weight(&per_rps, &l, 1), Err(Undefined));
        let zero_by_zero = Formula::Div(i(Input::Rps), i(Input::Rps));
        assert_eq!(weight(&zero_by_zero, &l, 1), Err(Undefined));
        let overflow = Formula::Mul(n(1e300), n(1e300));
        assert_eq!(weight(&overflow, &l, 1), Err(Undefined));
        // A NaN input (a report must not carry one; this is the last guard).
        let nan = Load {
            cpu: f64::NAN,
            ..Load::default()
        };
        assert_eq!(weight(&example(), &nan, 1), Err(Undefined));
    }

    #[test]
    fn input_names_round_trip() {
        for x in Input::ALL {
            assert_eq!(Input::from_name(x.name()), Some(x));
        }
        assert_eq!(Input::from_name("load"), None);
    }
}
