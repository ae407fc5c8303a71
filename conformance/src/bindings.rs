//! Placeholders: `"$NAME"` in a session binds NAME to the address (or string) seen in an
//! expected frame, and is replaced by it in frames sent later.

use std::collections::BTreeMap;

use serde_json::Value;

/// The values bound so far in one run of a case.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    values: BTreeMap<String, String>,
}

impl Bindings {
    /// `NAME` if `text` is exactly a placeholder `$NAME`.
    #[must_use]
    pub fn name_of(text: &str) -> Option<&str> {
        let name = text.strip_prefix('$')?;
        let mut chars = name.chars();
        (chars.next()?.is_ascii_alphabetic()
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then_some(name)
    }

    /// The value bound to `name`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Bind the placeholder `$NAME` to `actual`, or check that it is already bound to it.
    /// Two names never bind the same value: relays hand out unique addresses (rule 3.1).
    ///
    /// # Errors
    /// If the name is bound to something else, or the value to another name.
    pub fn bind_or_compare(&mut self, placeholder: &str, actual: &str) -> Result<(), String> {
        let name = Self::name_of(placeholder)
            .ok_or_else(|| format!("{placeholder:?} is not a placeholder"))?;
        match self.values.get(name) {
            Some(bound) if bound == actual => Ok(()),
            Some(bound) => Err(format!("expected ${name} = {bound:?}, got {actual:?}")),
            None => {
                if let Some((other, _)) = self.values.iter().find(|(_, v)| *v == actual) {
                    return Err(format!(
                        "{actual:?} was already seen as ${other}; expected a new value for ${name}"
                    ));
                }
                self.values.insert(name.to_owned(), actual.to_owned());
                Ok(())
            }
        }
    }

    /// The value for `$NAME` in something to send: bound, or for `NEW…` names a fresh
    /// random address, bound now.
    fn resolve(&mut self, name: &str) -> Result<String, String> {
        if let Some(value) = self.values.get(name) {
            return Ok(value.clone());
        }
        if name.starts_with("NEW") {
            let fresh = random_address()?;
            self.values.insert(name.to_owned(), fresh.clone());
            return Ok(fresh);
        }
        Err(format!("${name} is not bound"))
    }

    /// `value` with every placeholder string replaced by its value.
    ///
    /// # Errors
    /// If a placeholder is not bound.
    pub fn substitute_value(&mut self, value: &Value) -> Result<Value, String> {
        Ok(match value {
            Value::String(s) => match Self::name_of(s) {
                Some(name) => Value::String(self.resolve(name)?),
                None => value.clone(),
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute_value(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(members) => Value::Object(
                members
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), self.substitute_value(v)?)))
                    .collect::<Result<_, String>>()?,
            ),
            other => other.clone(),
        })
    }

    /// `text` with every `$NAME` replaced by its value.
    ///
    /// # Errors
    /// If a placeholder is not bound.
    pub fn substitute_text(&mut self, text: &str) -> Result<String, String> {
        let mut names = Vec::new();
        placeholders_in_text(text, &mut names);
        // Longest first, so $A10 is not mistaken for $A1 followed by "0".
        names.sort_by_key(|n| std::cmp::Reverse(n.len()));
        let mut out = text.to_owned();
        for name in names {
            let value = self.resolve(&name)?;
            out = out.replace(&format!("${name}"), &value);
        }
        Ok(out)
    }
}

/// Every placeholder name in a JSON value's strings.
pub(crate) fn placeholders_in_value(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::String(s) => {
            if let Some(name) = Bindings::name_of(s) {
                out.push(name.to_owned());
            }
        }
        Value::Array(items) => items.iter().for_each(|v| placeholders_in_value(v, out)),
        Value::Object(members) => members.values().for_each(|v| placeholders_in_value(v, out)),
        _ => {}
    }
}

/// Every `$NAME` in a text.
pub(crate) fn placeholders_in_text(text: &str, out: &mut Vec<String>) {
    for (at, _) in text.match_indices('$') {
        let name: String = text[at + 1..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if name.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
            out.push(name);
        }
    }
}

/// 128 bits from the OS CSPRNG, as a relay address that no relay has handed out.
pub(crate) fn random_address() -> Result<String, String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| format!("no random source: {e}"))?;
    Ok(format!("{:032x}", u128::from_le_bytes(bytes)))
}
