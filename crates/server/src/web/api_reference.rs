//! `/developers/api`: the API reference, rendered on the server from this
//! server's OpenAPI document (`api::openapi`), so it says exactly what
//! `/openapi.json` says and loads nothing from anywhere else.

use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::Value;

use crate::api::openapi;
use crate::http::extract::Viewer;
use crate::http::pages::{self, Site};
use crate::http::routes::Routes;
use crate::state::AppState;

pub fn routes() -> Routes {
    Routes::new().route("/developers/api", axum::routing::get(page))
}

#[derive(Template)]
#[template(path = "api_reference.html")]
struct ReferencePage<'a> {
    site: Site<'a>,
    server: String,
    groups: Vec<Group>,
    schemas: Vec<SchemaDoc>,
    schemes: Vec<Scheme>,
}

/// The operations under one tag.
struct Group {
    name: String,
    description: String,
    operations: Vec<Operation>,
}

struct Operation {
    anchor: String,
    method: String,
    path: String,
    summary: String,
    description: String,
    /// The security schemes that may be used, `none` among them when the
    /// operation may be called without one.
    security: Vec<String>,
    params: Vec<Field>,
    bodies: Vec<(String, String)>,
    responses: Vec<ResponseDoc>,
}

struct ResponseDoc {
    status: String,
    description: String,
    kind: String,
}

/// A parameter or a schema's property.
struct Field {
    name: String,
    place: String,
    kind: String,
    required: bool,
    description: String,
}

struct SchemaDoc {
    name: String,
    description: String,
    fields: Vec<Field>,
}

struct Scheme {
    name: String,
    kind: String,
    description: String,
}

/// A schema's, operation's or parameter's `description`, as HTML.
fn description(v: &Value) -> String {
    prose(v["description"].as_str().unwrap_or_default())
}

/// The names a schema's `required` lists.
fn required(schema: &Value) -> impl Iterator<Item = &str> {
    schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

/// A schema in words, as HTML: a link to a named schema, `string or null`,
/// `array of …`, `one of …`.
fn kind(schema: &Value) -> String {
    if let Some(reference) = schema["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or_default();
        let name = pages::escape(name);
        return format!("<a href=\"#schema-{name}\">{name}</a>");
    }
    for combined in ["oneOf", "anyOf", "allOf"] {
        if let Some(parts) = schema[combined].as_array() {
            let joiner = if combined == "allOf" { " and " } else { " or " };
            return parts.iter().map(kind).collect::<Vec<_>>().join(joiner);
        }
    }
    if let Some(values) = schema["enum"].as_array() {
        let values: Vec<String> = values
            .iter()
            .map(|v| format!("<code>{}</code>", pages::escape(&text(v))))
            .collect();
        return format!("one of {}", values.join(", "));
    }
    let types: Vec<String> = match &schema["type"] {
        Value::String(t) => vec![t.clone()],
        Value::Array(ts) => ts.iter().map(text).collect(),
        _ => Vec::new(),
    };
    let named: Vec<String> = types
        .iter()
        .map(|t| match t.as_str() {
            "array" => format!("array of {}", kind(&schema["items"])),
            other => pages::escape(other),
        })
        .collect();
    if named.is_empty() {
        "any JSON".to_owned()
    } else {
        named.join(" or ")
    }
}

/// Text with `code` spans, as HTML.
fn prose(text: &str) -> String {
    let mut html = String::new();
    for (i, part) in text.split('`').enumerate() {
        let part = pages::escape(part);
        if i % 2 == 1 {
            html.push_str(&format!("<code>{part}</code>"));
        } else {
            html.push_str(&part);
        }
    }
    html
}

fn operation(method: &str, path: &str, op: &Value) -> Operation {
    let mut security: Vec<String> = op["security"]
        .as_array()
        .map(|alternatives| {
            alternatives
                .iter()
                .map(|a| {
                    a.as_object()
                        .and_then(|o| o.keys().next().cloned())
                        .unwrap_or_else(|| "none".to_owned())
                })
                .collect()
        })
        .unwrap_or_default();
    security.dedup();
    let params = op["parameters"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| Field {
            name: text(&p["name"]),
            place: text(&p["in"]),
            kind: kind(&p["schema"]),
            required: p["required"].as_bool().unwrap_or(false),
            description: description(p),
        })
        .collect();
    let bodies = op["requestBody"]["content"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(media, content)| (media.clone(), kind(&content["schema"])))
        .collect();
    let responses = op["responses"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(status, r)| ResponseDoc {
            status: status.clone(),
            description: description(r),
            kind: r["content"]
                .as_object()
                .and_then(|c| c.iter().next())
                .map(|(media, content)| {
                    format!("{} ({})", kind(&content["schema"]), pages::escape(media))
                })
                .unwrap_or_default(),
        })
        .collect();
    Operation {
        anchor: text(&op["operationId"]),
        method: method.to_ascii_uppercase(),
        path: path.to_owned(),
        summary: text(&op["summary"]),
        description: description(op),
        security,
        params,
        bodies,
        responses,
    }
}

fn schema_doc(name: &str, schema: &Value) -> SchemaDoc {
    let required_here: Vec<&str> = required(schema).collect();
    let mut fields = Vec::new();
    // A flattened struct is `allOf` a named schema and its own members.
    let parts: Vec<&Value> = match schema["allOf"].as_array() {
        Some(parts) => parts.iter().collect(),
        None => vec![schema],
    };
    let mut described = description(schema);
    for part in parts {
        if part["$ref"].is_string() {
            described.push_str(&format!(" With every member of {}.", kind(part)));
            continue;
        }
        let required: Vec<&str> = required(part)
            .chain(required_here.iter().copied())
            .collect();
        for (property, s) in part["properties"].as_object().into_iter().flatten() {
            fields.push(Field {
                name: property.clone(),
                place: String::new(),
                kind: kind(s),
                required: required.contains(&property.as_str()),
                description: description(s),
            });
        }
        if part["enum"].is_array() {
            described.push_str(&format!(" It is {}.", kind(part)));
        }
    }
    SchemaDoc {
        name: name.to_owned(),
        description: described,
        fields,
    }
}

async fn page(State(state): State<AppState>, viewer: Viewer) -> Response {
    let doc = openapi::document(&state.settings, &state.issuer.to_string());
    let mut groups: Vec<Group> = doc["tags"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| Group {
            name: text(&t["name"]),
            description: description(t),
            operations: Vec::new(),
        })
        .collect();
    for (path, item) in doc["paths"].as_object().into_iter().flatten() {
        for (method, op) in item.as_object().into_iter().flatten() {
            let tag = op["tags"][0].as_str().unwrap_or_default();
            if let Some(group) = groups.iter_mut().find(|g| g.name == tag) {
                group.operations.push(operation(method, path, op));
            }
        }
    }
    groups.retain(|g| !g.operations.is_empty());
    // The document's members come sorted by name; a path's methods read
    // better in the order of reading, then changing, then removing.
    let rank = |method: &str| {
        ["GET", "POST", "PUT", "PATCH", "DELETE"]
            .iter()
            .position(|m| *m == method)
            .unwrap_or(usize::MAX)
    };
    for group in &mut groups {
        group
            .operations
            .sort_by(|a, b| (&a.path, rank(&a.method)).cmp(&(&b.path, rank(&b.method))));
    }
    let schemas = doc["components"]["schemas"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, schema)| schema_doc(name, schema))
        .collect();
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, s)| Scheme {
            name: name.clone(),
            kind: format!("HTTP {}", text(&s["scheme"])),
            description: description(s),
        })
        .collect();
    pages::render(
        StatusCode::OK,
        &ReferencePage {
            site: viewer.site(&state.settings),
            server: text(&doc["servers"][0]["url"]),
            groups,
            schemas,
            schemes,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn schemas_read_as_words() {
        assert_eq!(kind(&json!({"type": ["string", "null"]})), "string or null");
        assert_eq!(
            kind(&json!({"type": "array", "items": {"$ref": "#/components/schemas/Patient"}})),
            "array of <a href=\"#schema-Patient\">Patient</a>"
        );
        assert_eq!(
            kind(&json!({"enum": ["a<b", "c"]})),
            "one of <code>a&lt;b</code>, <code>c</code>"
        );
        assert_eq!(kind(&json!({})), "any JSON");
        assert_eq!(
            prose("send `<token>` & wait"),
            "send <code>&lt;token&gt;</code> &amp; wait"
        );
    }
}
