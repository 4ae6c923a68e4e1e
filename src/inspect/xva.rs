//! An XVA's `ova.xml`: the database records `xe vm-export` wrote, as one
//! XML-RPC value. Its top struct's `objects` array holds structs of
//! `class`, `id` (`Ref:<n>`) and `snapshot` (the record). The machine is the
//! first `VM` record that is not a snapshot; its disks are the `VDI`s its
//! `Disk` VBDs point at.
//!
//! The text is at most 1 MiB (the tar reader keeps no more), and values may
//! nest at most [`MAX_DEPTH`] deep, so neither parsing nor dropping the tree
//! can run out of stack.

use std::collections::BTreeMap;

use quick_xml::XmlVersion;
use quick_xml::events::Event;

use crate::model::{Machine, OvaDisk};

/// How deep values may nest; `xe vm-export` writes at most 5 levels.
const MAX_DEPTH: usize = 32;

/// An XML-RPC value, with every scalar kept as its text.
#[derive(Debug, PartialEq)]
enum Value {
    Scalar(String),
    Struct(Vec<(String, Value)>),
    Array(Vec<Value>),
}

impl Value {
    fn member(&self, name: &str) -> Option<&Value> {
        match self {
            Value::Struct(members) => members.iter().find(|(n, _)| n == name).map(|(_, v)| v),
            _ => None,
        }
    }

    fn text(&self, name: &str) -> Option<&str> {
        match self.member(name)? {
            Value::Scalar(s) => Some(s.trim()),
            _ => None,
        }
    }
}

/// The markup of `ova.xml`, flattened: element starts and ends (an empty
/// element is both) and the text between them.
#[derive(Debug)]
enum Token {
    Open(String),
    Close,
    Text(String),
}

fn tokens(xml: &[u8]) -> Result<Vec<Token>, String> {
    fn text(out: &mut Vec<Token>, piece: &str) {
        match out.last_mut() {
            Some(Token::Text(t)) => t.push_str(piece),
            _ => out.push(Token::Text(piece.to_owned())),
        }
    }
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        let event = reader
            .read_event_into(&mut buf)
            .map_err(|e| format!("XVA: ova.xml is not well-formed XML: {e}"))?;
        match event {
            Event::Start(e) => out.push(Token::Open(e.name().as_ref().to_owned())),
            Event::Empty(e) => {
                out.push(Token::Open(e.name().as_ref().to_owned()));
                out.push(Token::Close);
            }
            Event::End(_) => out.push(Token::Close),
            Event::Text(t) => text(&mut out, &t.xml_content(XmlVersion::Implicit1_0)),
            Event::CData(t) => text(&mut out, &t),
            Event::GeneralRef(r) => {
                let resolved = match r
                    .resolve_char_ref()
                    .map_err(|e| format!("XVA: ova.xml has a bad reference: {e}"))?
                {
                    Some(c) => c.to_string(),
                    None => match r.as_ref() {
                        "lt" => "<".into(),
                        "gt" => ">".into(),
                        "amp" => "&".into(),
                        "quot" => "\"".into(),
                        "apos" => "'".into(),
                        other => {
                            return Err(format!("XVA: ova.xml uses an unknown entity &{other};"));
                        }
                    },
                };
                text(&mut out, &resolved);
            }
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    Ok(out)
}

/// A recursive-descent reader over the tokens, at most [`MAX_DEPTH`] deep.
struct Parser {
    tokens: std::vec::IntoIter<Token>,
}

fn unexpected(what: &str, token: Option<Token>) -> String {
    let found = match token {
        Some(Token::Open(name)) => format!("<{name}>"),
        Some(Token::Close) => "a closing tag".to_owned(),
        Some(Token::Text(t)) => format!("the text {:?}", t.trim()),
        None => "the end".to_owned(),
    };
    format!("XVA: ova.xml is not an XML-RPC value: expected {what}, found {found}")
}

impl Parser {
    /// The next token that is not white space between elements.
    fn next(&mut self) -> Option<Token> {
        self.tokens
            .find(|t| !matches!(t, Token::Text(s) if s.trim().is_empty()))
    }

    fn open(&mut self, name: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Open(n)) if n == name => Ok(()),
            other => Err(unexpected(&format!("<{name}>"), other)),
        }
    }

    fn close(&mut self, name: &str) -> Result<(), String> {
        match self.next() {
            Some(Token::Close) => Ok(()),
            other => Err(unexpected(&format!("</{name}>"), other)),
        }
    }

    /// The text of an element already opened, up to its end.
    fn scalar(&mut self, name: &str) -> Result<String, String> {
        match self.tokens.next() {
            Some(Token::Close) => Ok(String::new()),
            Some(Token::Text(t)) => {
                self.close(name)?;
                Ok(t)
            }
            other => Err(unexpected(&format!("the text of <{name}>"), other)),
        }
    }

    /// A `<value>` already opened, up to its end.
    fn value(&mut self, depth: usize) -> Result<Value, String> {
        if depth > MAX_DEPTH {
            return Err(format!(
                "XVA: ova.xml nests values more than {MAX_DEPTH} deep"
            ));
        }
        let value = match self.tokens.next() {
            Some(Token::Close) => return Ok(Value::Scalar(String::new())),
            Some(Token::Text(t)) if !t.trim().is_empty() => {
                self.close("value")?;
                return Ok(Value::Scalar(t));
            }
            Some(Token::Text(_)) => match self.next() {
                Some(Token::Close) => return Ok(Value::Scalar(String::new())),
                other => self.typed(other, depth)?,
            },
            other => self.typed(other, depth)?,
        };
        self.close("value")?;
        Ok(value)
    }

    /// What a `<value>` holds when it holds an element.
    fn typed(&mut self, token: Option<Token>, depth: usize) -> Result<Value, String> {
        let Some(Token::Open(kind)) = token else {
            return Err(unexpected("a value", token));
        };
        match kind.as_str() {
            "struct" => {
                let mut members = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Close) => break,
                        Some(Token::Open(n)) if n == "member" => {
                            self.open("name")?;
                            let name = self.scalar("name")?;
                            self.open("value")?;
                            let value = self.value(depth + 1)?;
                            self.close("member")?;
                            members.push((name, value));
                        }
                        other => return Err(unexpected("<member>", other)),
                    }
                }
                Ok(Value::Struct(members))
            }
            "array" => {
                self.open("data")?;
                let mut items = Vec::new();
                loop {
                    match self.next() {
                        Some(Token::Close) => break,
                        Some(Token::Open(n)) if n == "value" => items.push(self.value(depth + 1)?),
                        other => return Err(unexpected("<value>", other)),
                    }
                }
                self.close("array")?;
                Ok(Value::Array(items))
            }
            "string" | "int" | "i4" | "i8" | "double" | "boolean" | "dateTime.iso8601"
            | "base64" | "nil" => self.scalar(&kind).map(Value::Scalar),
            _ => Err(unexpected("a value", Some(Token::Open(kind)))),
        }
    }
}

/// The machine `ova.xml` describes, and the ids of its disks' VDIs, which
/// name the directories of their blocks in the archive.
pub fn parse(xml: &[u8]) -> Result<(Machine, Vec<String>), String> {
    let mut parser = Parser {
        tokens: tokens(xml)?.into_iter(),
    };
    parser.open("value")?;
    let top = parser.value(0)?;
    if let Some(extra) = parser.next() {
        return Err(unexpected("the end", Some(extra)));
    }
    let objects = match top.member("objects") {
        Some(Value::Array(objects)) => objects,
        _ => return Err("XVA: ova.xml has no `objects` array".into()),
    };
    // (class, id, record) of each object.
    let records: Vec<(&str, &str, &Value)> = objects
        .iter()
        .filter_map(|o| Some((o.text("class")?, o.text("id")?, o.member("snapshot")?)))
        .collect();
    let is_true = |v: Option<&str>| matches!(v, Some("1" | "true"));
    let vms = || records.iter().filter(|(class, ..)| *class == "VM");
    let &(_, vm_id, vm) = vms()
        .find(|(.., r)| !is_true(r.text("is_a_snapshot")))
        .or_else(|| vms().next())
        .ok_or("XVA: ova.xml describes no VM")?;
    let vdis: BTreeMap<&str, &Value> = records
        .iter()
        .filter(|(class, ..)| *class == "VDI")
        .map(|(_, id, r)| (*id, *r))
        .collect();
    let mut disks = Vec::new();
    let mut ids = Vec::new();
    for (_, _, vbd) in records.iter().filter(|(class, ..)| *class == "VBD") {
        if vbd.text("VM") != Some(vm_id) || vbd.text("type") != Some("Disk") {
            continue;
        }
        let Some((id, vdi)) = vbd.text("VDI").and_then(|id| vdis.get_key_value(id)) else {
            continue;
        };
        let capacity = number(vdi, "virtual_size", "a VDI's")?
            .ok_or("XVA: a VDI of the VM has no virtual_size")?;
        disks.push(OvaDisk {
            file: None,
            capacity,
        });
        ids.push((*id).to_owned());
    }
    let machine = Machine {
        name: vm
            .text("name_label")
            .filter(|n| !n.is_empty())
            .map(str::to_owned),
        os: None,
        cpus: number(vm, "VCPUs_max", "the VM's")?,
        memory_mib: number(vm, "memory_static_max", "the VM's")?.map(|b| b >> 20),
        disks,
    };
    Ok((machine, ids))
}

/// A record's field as a number, when it has the field.
fn number(record: &Value, field: &str, what: &str) -> Result<Option<u64>, String> {
    record
        .text(field)
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| format!("XVA: {what} {field} is not a number: {v:?}"))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database record: class, id, and its fields' names and values.
    type Record<'a> = (&'a str, &'a str, &'a [(&'a str, &'a str)]);

    /// The records, as `xe vm-export` writes them.
    fn ova_xml(objects: &[Record]) -> String {
        let mut xml = String::from(
            "<value><struct><member><name>version</name><value><struct>\
             <member><name>export_vsn</name><value>2</value></member>\
             </struct></value></member><member><name>objects</name><value><array><data>",
        );
        for (class, id, fields) in objects {
            xml.push_str(&format!(
                "<value><struct><member><name>class</name><value>{class}</value></member>\
                 <member><name>id</name><value>{id}</value></member>\
                 <member><name>snapshot</name><value><struct>"
            ));
            for (name, value) in *fields {
                xml.push_str(&format!(
                    "<member><name>{name}</name><value>{value}</value></member>"
                ));
            }
            xml.push_str("</struct></value></member></struct></value>");
        }
        xml.push_str("</data></array></value></member></struct></value>");
        xml
    }

    #[test]
    fn the_vm_and_its_disks_not_its_snapshots_or_cds() {
        let xml = ova_xml(&[
            (
                "VM",
                "Ref:0",
                &[
                    ("name_label", "old"),
                    ("is_a_snapshot", "<boolean>1</boolean>"),
                ],
            ),
            (
                "VM",
                "Ref:1",
                &[
                    ("name_label", "<string>web &amp; db</string>"),
                    ("is_a_snapshot", "<boolean>0</boolean>"),
                    ("memory_static_max", "1073741824"),
                    ("VCPUs_max", "4"),
                ],
            ),
            (
                "VBD",
                "Ref:2",
                &[("VM", "Ref:1"), ("VDI", "Ref:3"), ("type", "Disk")],
            ),
            (
                "VBD",
                "Ref:4",
                &[("VM", "Ref:1"), ("VDI", "Ref:5"), ("type", "CD")],
            ),
            ("VDI", "Ref:3", &[("virtual_size", "8589934592")]),
            ("VDI", "Ref:5", &[("virtual_size", "700000000")]),
        ]);
        let (m, ids) = parse(xml.as_bytes()).unwrap();
        assert_eq!(ids, ["Ref:3"]);
        assert_eq!(m.name.as_deref(), Some("web & db"));
        assert_eq!((m.cpus, m.memory_mib), (Some(4), Some(1024)));
        assert_eq!(
            m.disks.iter().map(|d| d.capacity).collect::<Vec<_>>(),
            [8 << 30]
        );
    }

    #[test]
    fn malformed_records_are_errors() {
        let bad_size = ova_xml(&[
            ("VM", "Ref:0", &[]),
            (
                "VBD",
                "Ref:1",
                &[("VM", "Ref:0"), ("VDI", "Ref:2"), ("type", "Disk")],
            ),
            ("VDI", "Ref:2", &[("virtual_size", "ten")]),
        ]);
        assert_eq!(
            parse(bad_size.as_bytes()).unwrap_err(),
            "XVA: a VDI's virtual_size is not a number: \"ten\""
        );
        assert_eq!(
            parse(ova_xml(&[("VDI", "Ref:0", &[])]).as_bytes()).unwrap_err(),
            "XVA: ova.xml describes no VM"
        );
        assert_eq!(
            parse(b"<value><struct><member><name>x</name><int>1</int></member></struct></value>")
                .unwrap_err(),
            "XVA: ova.xml is not an XML-RPC value: expected <value>, found <int>"
        );
        let deep = "<value><array><data>".repeat(40) + &"</data></array></value>".repeat(40);
        assert_eq!(
            parse(deep.as_bytes()).unwrap_err(),
            "XVA: ova.xml nests values more than 32 deep"
        );
    }
}
