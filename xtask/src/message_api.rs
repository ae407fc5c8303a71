//! What the hand-written `compendium-messages` needs beside typify's `Message` enum and
//! must grow with the schema, generated from the same run:
//!
//! - one constructor per message type, `Message::new_<type>`, whose parameters are the
//!   type's *required* members (in schema order) and which leaves every optional member
//!   absent — so adding an optional member to the schema changes no caller, and adding a
//!   required one breaks exactly the places that construct that type;
//! - `Message::type_name`, the wire value of `type`;
//! - `Message::direction`, from each shape's `x-direction` (who sends it).
//!
//! The constructors are read off typify's output (its field names and types), the wire
//! names and directions off the schema, so neither can disagree with the enum.

use anyhow::{Context, Result, bail};
use quote::ToTokens;
use serde_json::Value;

/// One field of a variant.
struct Field {
    /// The Rust name.
    name: String,
    /// The Rust type, as text.
    ty: String,
    /// The member's name on the wire.
    wire: String,
    /// Whether the schema requires it.
    required: bool,
}

/// One variant of the generated enum, as the constructors need it.
struct Variant {
    ident: String,
    /// The wire value of `type` (the variant's `#[serde(rename)]`).
    wire: String,
    /// Whether typify wrote it as a unit variant (a shape with only `type`).
    unit: bool,
    /// Named fields, in typify's order.
    fields: Vec<Field>,
    /// The schema's `required` list (wire names, `type` included), in its order.
    required: Vec<String>,
    /// The shape's description, for the constructor's docs.
    description: Option<String>,
    /// `x-direction`: `ClientToServer` or `ServerToClient`.
    direction: &'static str,
}

/// The `impl` block for `enum_name` in `file` (typify's output) and `schema`.
pub(crate) fn generate(file: &syn::File, schema: &Value, enum_name: &str) -> Result<String> {
    let variants = variants(file, schema, enum_name)?;
    let mut out = format!("impl {enum_name} {{\n");
    for v in &variants {
        // Parameters in the order of the schema's `required` list, which says what the
        // message is, not in the order typify happened to write the fields.
        let params: Vec<String> = v
            .required
            .iter()
            .filter_map(|wire| v.fields.iter().find(|f| f.required && &f.wire == wire))
            .map(|f| format!("{}: {}", f.name, f.ty))
            .collect();
        let body = if v.unit {
            format!("Self::{}", v.ident)
        } else {
            let inits: Vec<String> = v
                .fields
                .iter()
                .map(|f| {
                    if f.required {
                        f.name.clone()
                    } else {
                        format!("{}: ::std::default::Default::default()", f.name)
                    }
                })
                .collect();
            format!("Self::{} {{ {} }}", v.ident, inits.join(", "))
        };
        let optional: Vec<&str> = v
            .fields
            .iter()
            .filter(|f| !f.required)
            .map(|f| f.wire.as_str())
            .collect();
        let absent = if optional.is_empty() {
            String::new()
        } else {
            format!(
                "\n///\n/// Optional members left absent: {}.",
                optional
                    .iter()
                    .map(|name| format!("`{name}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        };
        let description = v
            .description
            .as_deref()
            .map(|d| format!("\n///\n/// {}", d.replace('\n', " ")))
            .unwrap_or_default();
        out.push_str(&format!(
            "/// Builds a `{}` message from its required members.{description}{absent}\n\
             #[must_use]\n\
             pub fn new_{}({}) -> Self {{ {body} }}\n",
            v.wire,
            snake(&v.ident),
            params.join(", "),
        ));
    }
    out.push_str(
        "/// The wire value of this message's `type` member.\n\
         #[must_use]\n\
         pub fn type_name(&self) -> &'static str { match self {\n",
    );
    for v in &variants {
        out.push_str(&format!("Self::{} {{ .. }} => {:?},\n", v.ident, v.wire));
    }
    out.push_str(
        "} }\n\
         /// Who sends this type of message (the schema's `x-direction`, rule 2.4).\n\
         #[must_use]\n\
         pub fn direction(&self) -> crate::Direction { match self {\n",
    );
    for v in &variants {
        out.push_str(&format!(
            "Self::{} {{ .. }} => crate::Direction::{},\n",
            v.ident, v.direction
        ));
    }
    out.push_str("} }\n}\n");
    let names: Vec<String> = variants.iter().map(|v| format!("{:?}", v.wire)).collect();
    out.push_str(&format!(
        "/// The wire value of `type` of every message, in schema order.\n\
         pub const TYPE_NAMES: &[&str] = &[{}];\n",
        names.join(", ")
    ));
    Ok(out)
}

fn variants(file: &syn::File, schema: &Value, enum_name: &str) -> Result<Vec<Variant>> {
    let Some(item) = file.items.iter().find_map(|item| match item {
        syn::Item::Enum(e) if e.ident == enum_name => Some(e),
        _ => None,
    }) else {
        bail!("typify generated no enum {enum_name}");
    };
    let arms = schema
        .get("oneOf")
        .and_then(Value::as_array)
        .context("the schema's root has no oneOf")?;
    item.variants
        .iter()
        .map(|variant| {
            let ident = variant.ident.to_string();
            let wire = serde_rename(&variant.attrs)
                .with_context(|| format!("variant {ident} has no #[serde(rename)]"))?;
            let arm = arms
                .iter()
                .find(|arm| arm.pointer("/properties/type/const").and_then(Value::as_str) == Some(wire.as_str()))
                .with_context(|| format!("no oneOf arm has type {wire:?}"))?;
            let direction = match arm.get("x-direction").and_then(Value::as_str) {
                Some("client-to-server") => "ClientToServer",
                Some("server-to-client") => "ServerToClient",
                other => bail!(
                    "the schema's {wire} shape has x-direction {other:?}: give it \
                     \"x-direction\": \"client-to-server\" or \"server-to-client\" (who sends it, rule 2.4)"
                ),
            };
            let required: Vec<String> = arm
                .get("required")
                .and_then(Value::as_array)
                .map(|r| r.iter().filter_map(Value::as_str).map(str::to_owned).collect())
                .unwrap_or_default();
            let (unit, fields) = match &variant.fields {
                syn::Fields::Unit => (true, Vec::new()),
                syn::Fields::Named(named) => {
                    let fields = named
                        .named
                        .iter()
                        .map(|field| {
                            let name = field
                                .ident
                                .as_ref()
                                .map(ToString::to_string)
                                .context("a named field without a name")?;
                            let wire = serde_rename(&field.attrs).unwrap_or_else(|| name.clone());
                            Ok(Field {
                                ty: field.ty.to_token_stream().to_string(),
                                required: required.contains(&wire),
                                name,
                                wire,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?;
                    (false, fields)
                }
                syn::Fields::Unnamed(_) => {
                    bail!("variant {ident}: typify wrote a tuple variant, which this generator does not expect")
                }
            };
            Ok(Variant {
                ident,
                wire,
                unit,
                fields,
                required,
                description: arm.get("description").and_then(Value::as_str).map(str::to_owned),
                direction,
            })
        })
        .collect()
}

/// The `rename = "..."` of a `#[serde(...)]` attribute.
fn serde_rename(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|attr| {
        if !attr.path().is_ident("serde") {
            return None;
        }
        let mut found = None;
        let _ = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("rename") {
                let value: syn::LitStr = meta.value()?.parse()?;
                found = Some(value.value());
            } else if meta.input.peek(syn::Token![=]) {
                // Skip other `key = value` items (skip_serializing_if, default, ...).
                let _: syn::Expr = meta.value()?.parse()?;
            }
            Ok(())
        });
        found
    })
}

/// `Initresp` → `initresp`, `PingPong` → `ping_pong`.
fn snake(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snake_case_of_variant_names() {
        assert_eq!(snake("Initresp"), "initresp");
        assert_eq!(snake("PingPong"), "ping_pong");
        assert_eq!(snake("Err"), "err");
    }
}
