//! Minisign keys on PKCS#11 tokens: hardware security modules, the
//! PKCS#11 libraries of cloud key services, SoftHSM. An RFC 7512 `pkcs11:`
//! URI names the token and the key ([`Uri`]); the module is loaded at run
//! time (cryptoki); [`TokenKey`] logs in and makes pure ed25519 signatures
//! (`CKM_EDDSA`) on the token, and [`generate`] and [`import`] put a key
//! pair there. The secret key never leaves the token. The PIN is never
//! shown, in errors or in `Debug`, and is wiped once the token has it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::mechanism::eddsa::{EddsaParams, EddsaSignatureScheme};
use cryptoki::mechanism::{Mechanism, MechanismType};
use cryptoki::object::{Attribute, AttributeType, KeyType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::slot::{Slot, TokenInfo};
use cryptoki::types::AuthPin;
use ed25519_dalek::{Signature as EdSignature, VerifyingKey};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};
use crate::fsutil;
use crate::sign::{KeyId, PublicKey, SecretKey, Signer};

/// `CKA_EC_PARAMS` of ed25519: the DER of its OID, 1.3.101.112 (RFC 8410).
const ED25519_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x70];
/// `CKA_EC_PARAMS` of ed25519 as some tokens write it: the DER of the
/// printable string `edwards25519` (PKCS#11 3.0's curve name).
const ED25519_NAME: &[u8] = b"\x13\x0cedwards25519";
/// ed448's OID, 1.3.101.113, to name it in an error.
const ED448_OID: &[u8] = &[0x06, 0x03, 0x2b, 0x65, 0x71];
/// The longest PIN file read.
const MAX_PIN_FILE: u64 = 4096;

/// An RFC 7512 URI that names a token and a key on it, e.g.
/// `pkcs11:token=vmcast;object=release?module-path=/usr/lib/softhsm/libsofthsm2.so`.
///
/// Path attributes: `token`, `manufacturer`, `model`, `serial` and
/// `slot-id` pick the token; `object` (the label) and `id` pick the key;
/// `type` may only be `private`. Query attributes: `module-path`, and the
/// PIN from `pin-source` (a file) or `pin-value`. It shows, and errors
/// name it, without its `pin-value`.
#[derive(Clone)]
pub struct Uri {
    /// The URI as written, less `pin-value`.
    shown: String,
    token: Option<String>,
    manufacturer: Option<String>,
    model: Option<String>,
    serial: Option<String>,
    slot_id: Option<u64>,
    object: Option<String>,
    id: Option<Vec<u8>>,
    module_path: Option<PathBuf>,
    pin_source: Option<PathBuf>,
    pin_value: Option<Zeroizing<String>>,
}

impl fmt::Display for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uri({})", self.shown)
    }
}

impl Uri {
    /// Whether `text` is meant as a `pkcs11:` URI (the scheme, in any case).
    pub fn is_uri(text: &str) -> bool {
        text.get(..7)
            .is_some_and(|scheme| scheme.eq_ignore_ascii_case("pkcs11:"))
    }

    /// Parses a `pkcs11:` URI. The error does not quote the URI, which may
    /// hold a PIN: the caller names where it came from.
    pub fn parse(text: &str) -> Result<Self, String> {
        if !Self::is_uri(text) {
            return Err("not a pkcs11: URI".into());
        }
        let rest = &text[7..];
        if rest.contains('#') {
            return Err("a pkcs11: URI has no fragment (`#`)".into());
        }
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let mut uri = Uri {
            shown: shown(text),
            token: None,
            manufacturer: None,
            model: None,
            serial: None,
            slot_id: None,
            object: None,
            id: None,
            module_path: None,
            pin_source: None,
            pin_value: None,
        };
        let mut seen = Vec::new();
        for attr in path.split(';').filter(|a| !a.is_empty()) {
            let (name, value) = name_value(attr, &mut seen)?;
            match name {
                "token" => uri.token = Some(decode_text(name, value)?),
                "manufacturer" => uri.manufacturer = Some(decode_text(name, value)?),
                "model" => uri.model = Some(decode_text(name, value)?),
                "serial" => uri.serial = Some(decode_text(name, value)?),
                "slot-id" => {
                    uri.slot_id = Some(
                        decode_text(name, value)?
                            .parse()
                            .map_err(|_| format!("slot-id `{value}` is not a number"))?,
                    );
                }
                "object" => uri.object = Some(decode_text(name, value)?),
                "id" => uri.id = Some(percent_encoding::percent_decode_str(value).collect()),
                "type" => match decode_text(name, value)?.as_str() {
                    "private" => {}
                    other => {
                        return Err(format!(
                            "type={other}: the URI names the private key (type=private, or no \
                             type at all)"
                        ));
                    }
                },
                "library-manufacturer"
                | "library-description"
                | "library-version"
                | "slot-description"
                | "slot-manufacturer" => {
                    return Err(format!(
                        "`{name}` is not supported: pick the token with token=, serial=, \
                         manufacturer=, model= or slot-id="
                    ));
                }
                other => return Err(format!("unknown attribute `{other}`")),
            }
        }
        for attr in query.split('&').filter(|a| !a.is_empty()) {
            let (name, value) = name_value(attr, &mut seen)?;
            match name {
                "module-path" => uri.module_path = Some(decode_text(name, value)?.into()),
                "module-name" => {
                    return Err("module-name is not supported: give the module's file with \
                                module-path=, or set VMCAST_PKCS11_MODULE"
                        .into());
                }
                "pin-source" => {
                    let source = decode_text(name, value)?;
                    let path = source.strip_prefix("file:").unwrap_or(&source);
                    if path.starts_with('|') || path.contains("://") {
                        return Err("pin-source must name a file".into());
                    }
                    uri.pin_source = Some(path.into());
                }
                "pin-value" => {
                    let bytes = Zeroizing::new(
                        percent_encoding::percent_decode_str(value).collect::<Vec<u8>>(),
                    );
                    let pin = std::str::from_utf8(&bytes)
                        .map_err(|_| "pin-value is not UTF-8".to_owned())?;
                    uri.pin_value = Some(Zeroizing::new(pin.to_owned()));
                }
                other => return Err(format!("unknown query attribute `{other}`")),
            }
        }
        if uri.pin_value.is_some() && uri.pin_source.is_some() {
            return Err("give the PIN with pin-source or pin-value, not both".into());
        }
        Ok(uri)
    }
}

/// `text` without its `pin-value` attribute: how a URI is shown.
pub fn shown(text: &str) -> String {
    match text.split_once('?') {
        None => text.to_owned(),
        Some((path, query)) => {
            let kept: Vec<&str> = query
                .split('&')
                .filter(|a| !a.starts_with("pin-value"))
                .collect();
            match kept.join("&") {
                q if q.is_empty() => path.to_owned(),
                q => format!("{path}?{q}"),
            }
        }
    }
}

/// An attribute's name and its still-encoded value; a name may come once.
fn name_value<'a>(attr: &'a str, seen: &mut Vec<&'a str>) -> Result<(&'a str, &'a str), String> {
    let (name, value) = attr
        .split_once('=')
        .ok_or_else(|| format!("`{}` is not name=value", shown_attr(attr)))?;
    if seen.contains(&name) {
        return Err(format!("`{name}` is given twice"));
    }
    seen.push(name);
    Ok((name, value))
}

/// An attribute as an error may quote it: a PIN's value is left out.
fn shown_attr(attr: &str) -> &str {
    match attr.starts_with("pin-value") {
        true => "pin-value",
        false => attr,
    }
}

fn decode_text(name: &str, value: &str) -> Result<String, String> {
    percent_encoding::percent_decode_str(value)
        .decode_utf8()
        .map(|v| v.into_owned())
        .map_err(|_| format!("{name}= is not UTF-8 once percent-decoded"))
}

/// Asked for the token's user PIN when the URI gives none and the token
/// has no PIN pad: the environment, else a terminal.
pub type PinPrompt<'a> = &'a mut dyn FnMut() -> Result<String>;

/// A loaded and initialized module, finalized when dropped if it was
/// initialized here.
struct Module {
    pkcs11: Pkcs11,
    path: PathBuf,
    finalize: bool,
}

impl Drop for Module {
    fn drop(&mut self) {
        if self.finalize {
            // Nothing to do about a module that cannot finalize; the
            // process is done with it.
            let _ = self.pkcs11.clone().finalize();
        }
    }
}

impl Module {
    fn load(uri: &Uri, env: Option<&Path>) -> Result<Self> {
        let Some(path) = uri.module_path.as_deref().or(env) else {
            return Err(Error::other(format_args!(
                "{uri}: no PKCS#11 module: add module-path=/path/to/module.so to the URI, or set \
                 VMCAST_PKCS11_MODULE (SoftHSM2's is /usr/lib/softhsm/libsofthsm2.so)"
            )));
        };
        if !path.exists() {
            return Err(Error::other(format_args!(
                "{uri}: no PKCS#11 module at {}: install the token's PKCS#11 library, or fix \
                 module-path (or VMCAST_PKCS11_MODULE)",
                path.display()
            )));
        }
        let pkcs11 = Pkcs11::new(path).map_err(|e| {
            // cryptoki's error repeats libloading's, its source.
            let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
            Error::other(format_args!(
                "{uri}: cannot load {} as a PKCS#11 module: {why}",
                path.display()
            ))
        })?;
        let finalize =
            match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
                Ok(()) => true,
                Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => false,
                Err(e) => {
                    return Err(Error::failed(
                        format!(
                            "{uri}: the PKCS#11 module {} failed to start",
                            path.display()
                        ),
                        e,
                    ));
                }
            };
        Ok(Module {
            pkcs11,
            path: path.to_path_buf(),
            finalize,
        })
    }

    /// The one slot whose token the URI names.
    fn slot(&self, uri: &Uri) -> Result<(Slot, TokenInfo)> {
        let slots = self
            .pkcs11
            .get_slots_with_token()
            .map_err(|e| Error::failed(format!("{uri}: cannot list the module's tokens"), e))?;
        let mut all = Vec::new();
        let mut matching = Vec::new();
        for slot in slots {
            let info = self.pkcs11.get_token_info(slot).map_err(|e| {
                Error::failed(format!("{uri}: cannot read the token in slot {slot}"), e)
            })?;
            if !info.token_initialized() {
                continue;
            }
            all.push(format!(
                "`{}` (serial {})",
                info.label(),
                info.serial_number()
            ));
            let wanted =
                |want: &Option<String>, have: &str| want.as_deref().is_none_or(|w| w == have);
            if uri.slot_id.is_none_or(|id| id == slot.id())
                && wanted(&uri.token, info.label())
                && wanted(&uri.manufacturer, info.manufacturer_id())
                && wanted(&uri.model, info.model())
                && wanted(&uri.serial, info.serial_number())
            {
                matching.push((slot, info));
            }
        }
        let module = self.path.display();
        match matching.len() {
            1 => Ok(matching.remove(0)),
            0 => Err(Error::other(format_args!(
                "{uri}: no token {} in the PKCS#11 module {module}; {}",
                match &uri.token {
                    Some(label) => format!("labelled `{label}`"),
                    None => "matches the URI".to_owned(),
                },
                match all.is_empty() {
                    true => "it has no token (is it plugged in, or initialized?)".to_owned(),
                    false => format!("its tokens: {}", all.join(", ")),
                }
            ))),
            n => Err(Error::other(format_args!(
                "{uri}: {n} tokens in {module} match the URI: {}; name one with token= or serial=",
                matching
                    .iter()
                    .map(|(_, i)| format!("`{}` (serial {})", i.label(), i.serial_number()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }
}

/// The user PIN, from the URI (`pin-value`, `pin-source`), else `prompt`.
fn pin(uri: &Uri, prompt: PinPrompt) -> Result<Zeroizing<String>> {
    if let Some(pin) = &uri.pin_value {
        return Ok(pin.clone());
    }
    let Some(path) = &uri.pin_source else {
        return prompt()
            .map(Zeroizing::new)
            .map_err(|e| Error::failed(uri.to_string(), e));
    };
    let (bytes, _) = fsutil::read_regular(path, true, MAX_PIN_FILE)?;
    let bytes = Zeroizing::new(bytes);
    let text =
        std::str::from_utf8(&bytes).map_err(|_| Error::file(path, "the PIN file is not UTF-8"))?;
    // One line end is the file's, not the PIN's.
    let pin = text
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(text);
    Ok(Zeroizing::new(pin.to_owned()))
}

/// Logs the user in, unless the token needs no login; the PIN goes to
/// the token and is wiped.
fn login(
    module: &Module,
    slot: Slot,
    info: &TokenInfo,
    session: &Session,
    uri: &Uri,
    prompt: PinPrompt,
) -> Result<()> {
    if !info.login_required() {
        return Ok(());
    }
    let label = info.label();
    if info.user_pin_locked() {
        return Err(pin_locked(uri, label));
    }
    let result = match (
        info.protected_authentication_path(),
        &uri.pin_value,
        &uri.pin_source,
    ) {
        // A PIN pad: the token asks.
        (true, None, None) => session.login(UserType::User, None),
        _ => {
            let pin = pin(uri, prompt)?;
            session.login(UserType::User, Some(&AuthPin::from(pin.as_str())))
        }
    };
    match result {
        Ok(()) | Err(CkError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(()),
        Err(CkError::Pkcs11(RvError::PinIncorrect, _)) => {
            let left = match module.pkcs11.get_token_info(slot) {
                Ok(info) if info.user_pin_locked() => {
                    "; the token has now locked the PIN: unlock it with the SO PIN"
                }
                Ok(info) if info.user_pin_final_try() => {
                    "; one more wrong PIN and the token locks it"
                }
                Ok(info) if info.user_pin_count_low() => "; the token says few tries are left",
                _ => "",
            };
            Err(Error::other(format_args!(
                "{uri}: wrong PIN for token `{label}`{left}"
            )))
        }
        Err(CkError::Pkcs11(RvError::PinLocked, _)) => Err(pin_locked(uri, label)),
        Err(CkError::Pkcs11(RvError::PinLenRange | RvError::PinInvalid, _)) => {
            Err(Error::other(format_args!(
                "{uri}: token `{label}` takes no such PIN (its length or characters are wrong)"
            )))
        }
        Err(e) => Err(Error::failed(
            format!("{uri}: cannot log in to token `{label}`"),
            e,
        )),
    }
}

fn pin_locked(uri: &Uri, label: &str) -> Error {
    Error::other(format_args!(
        "{uri}: the user PIN of token `{label}` is locked after too many wrong PINs; the \
         security officer must unlock it (e.g. `pkcs11-tool --init-pin --login --login-type so`)"
    ))
}

/// A token opened, its user logged in.
struct Opened {
    /// Dropped before the module is finalized.
    session: Session,
    module: Module,
    slot: Slot,
    label: String,
}

impl Opened {
    fn open(uri: &Uri, module: Option<&Path>, write: bool, prompt: PinPrompt) -> Result<Self> {
        let module = Module::load(uri, module)?;
        let (slot, info) = module.slot(uri)?;
        let session = match write {
            true => module.pkcs11.open_rw_session(slot),
            false => module.pkcs11.open_ro_session(slot),
        }
        .map_err(|e| {
            Error::failed(
                format!("{uri}: cannot open a session with token `{}`", info.label()),
                e,
            )
        })?;
        login(&module, slot, &info, &session, uri, prompt)?;
        Ok(Opened {
            session,
            module,
            slot,
            label: info.label().to_owned(),
        })
    }

    /// Fails unless the token signs with `CKM_EDDSA`.
    fn check_mechanism(&self, uri: &Uri) -> Result<()> {
        let signs = self
            .module
            .pkcs11
            .get_mechanism_info(self.slot, MechanismType::EDDSA)
            .is_ok_and(|info| info.sign());
        match signs {
            true => Ok(()),
            false => Err(Error::other(format_args!(
                "{uri}: token `{}` cannot sign with CKM_EDDSA (pure ed25519), which minisign \
                 signatures need (`pkcs11-tool --module MODULE -M` lists what it can do)",
                self.label
            ))),
        }
    }

    /// The private keys the URI names.
    fn private_keys(&self, uri: &Uri) -> Result<Vec<ObjectHandle>> {
        let mut template = vec![Attribute::Class(ObjectClass::PRIVATE_KEY)];
        if let Some(label) = &uri.object {
            template.push(Attribute::Label(label.as_bytes().to_vec()));
        }
        if let Some(id) = &uri.id {
            template.push(Attribute::Id(id.clone()));
        }
        self.session
            .find_objects(&template)
            .map_err(|e| Error::failed(format!("{uri}: cannot search token `{}`", self.label), e))
    }

    /// The ed25519 private key the URI names, and its id and label.
    fn key(&self, uri: &Uri) -> Result<(ObjectHandle, Vec<u8>, Vec<u8>)> {
        let found = self.private_keys(uri)?;
        let key = match found.as_slice() {
            [key] => *key,
            [] => {
                let present = self.labels(ObjectClass::PRIVATE_KEY);
                return Err(Error::other(format_args!(
                    "{uri}: no private key {} on token `{}`; {}",
                    match (&uri.object, &uri.id) {
                        (Some(label), _) => format!("labelled `{label}`"),
                        (None, Some(id)) => format!("with id {}", hex(id)),
                        (None, None) => "at all".to_owned(),
                    },
                    self.label,
                    match present.is_empty() {
                        true => "it holds none (or the PIN does not show them)".to_owned(),
                        false => format!("its private keys: {}", present.join(", ")),
                    }
                )));
            }
            many => {
                return Err(Error::other(format_args!(
                    "{uri}: {} private keys on token `{}` match; name one with object= or id=",
                    many.len(),
                    self.label
                )));
            }
        };
        let attrs = self
            .session
            .get_attributes(
                key,
                &[
                    AttributeType::KeyType,
                    AttributeType::EcParams,
                    AttributeType::Id,
                    AttributeType::Label,
                    AttributeType::Sign,
                ],
            )
            .map_err(|e| Error::failed(format!("{uri}: cannot read the key's attributes"), e))?;
        let (mut key_type, mut params, mut id, mut label, mut sign) =
            (None, None, vec![], vec![], true);
        for attr in attrs {
            match attr {
                Attribute::KeyType(t) => key_type = Some(t),
                Attribute::EcParams(p) => params = Some(p),
                Attribute::Id(i) => id = i,
                Attribute::Label(l) => label = l,
                Attribute::Sign(s) => sign = s,
                _ => {}
            }
        }
        let what = format!("{uri}: the key `{}`", String::from_utf8_lossy(&label));
        match key_type {
            Some(t) if t == KeyType::EC_EDWARDS => {}
            Some(t) => {
                return Err(Error::other(format_args!(
                    "{what} is {}, not ed25519: minisign signs with ed25519 only; make an \
                     ed25519 key on the token with `vmcast-gen keygen --pkcs11 URI`",
                    key_kind(t)
                )));
            }
            None => {
                return Err(Error::other(format_args!(
                    "{what} does not say what kind of key it is (no CKA_KEY_TYPE)"
                )));
            }
        }
        match params.as_deref() {
            Some(ED25519_OID | ED25519_NAME) => {}
            Some(ED448_OID) => {
                return Err(Error::other(format_args!(
                    "{what} is an ed448 key, not ed25519: minisign signs with ed25519 only"
                )));
            }
            _ => {
                return Err(Error::other(format_args!(
                    "{what} is an EdDSA key on a curve other than ed25519 (CKA_EC_PARAMS)"
                )));
            }
        }
        if !sign {
            return Err(Error::other(format_args!(
                "{what} may not sign (its CKA_SIGN is false)"
            )));
        }
        Ok((key, id, label))
    }

    /// The public half of the key with this id and label, from its public
    /// key object.
    fn public(&self, uri: &Uri, id: &[u8], label: &[u8]) -> Result<VerifyingKey> {
        let mut template = vec![
            Attribute::Class(ObjectClass::PUBLIC_KEY),
            Attribute::KeyType(KeyType::EC_EDWARDS),
        ];
        if !id.is_empty() {
            template.push(Attribute::Id(id.to_vec()));
        }
        if !label.is_empty() {
            template.push(Attribute::Label(label.to_vec()));
        }
        let found = self.session.find_objects(&template).map_err(|e| {
            Error::failed(format!("{uri}: cannot search token `{}`", self.label), e)
        })?;
        let mut points = Vec::new();
        for object in found {
            let attrs = self
                .session
                .get_attributes(object, &[AttributeType::EcPoint])
                .map_err(|e| {
                    Error::failed(
                        format!("{uri}: cannot read the public key's CKA_EC_POINT"),
                        e,
                    )
                })?;
            for attr in attrs {
                if let Attribute::EcPoint(point) = attr {
                    points.push(point);
                }
            }
        }
        points.dedup();
        let point = match points.as_slice() {
            [point] => point,
            [] => {
                return Err(Error::other(format_args!(
                    "{uri}: token `{}` has no public key object beside the private key (same \
                     CKA_ID and label): vmcast-gen reads the public half there, to write \
                     vmcast.pub and to check each signature",
                    self.label
                )));
            }
            _ => {
                return Err(Error::other(format_args!(
                    "{uri}: token `{}` has several different public keys with the private key's \
                     CKA_ID and label",
                    self.label
                )));
            }
        };
        let bytes: [u8; 32] = ed25519_point(point).ok_or_else(|| {
            Error::other(format_args!(
                "{uri}: the public key's CKA_EC_POINT is not a 32-byte ed25519 point"
            ))
        })?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| {
            Error::failed(
                format!("{uri}: the public key on the token is not a valid ed25519 key"),
                e,
            )
        })
    }

    /// Labels of the token's objects of a class, for an error.
    fn labels(&self, class: ObjectClass) -> Vec<String> {
        let objects = self
            .session
            .find_objects(&[Attribute::Class(class)])
            .unwrap_or_default();
        objects
            .into_iter()
            .filter_map(|o| {
                self.session
                    .get_attributes(o, &[AttributeType::Label, AttributeType::Id])
                    .ok()
            })
            .map(|attrs| {
                let (mut label, mut id) = (String::new(), String::new());
                for attr in attrs {
                    match attr {
                        Attribute::Label(l) => label = String::from_utf8_lossy(&l).into_owned(),
                        Attribute::Id(i) => id = hex(&i),
                        _ => {}
                    }
                }
                format!("`{label}` (id {id})")
            })
            .collect()
    }

    /// The key the URI names, checked, as a signer.
    fn into_key(self, uri: &Uri, key_id: Option<KeyId>) -> Result<TokenKey> {
        let (key, id, label) = self.key(uri)?;
        self.check_mechanism(uri)?;
        let public = self.public(uri, &id, &label)?;
        let key_id = match key_id {
            Some(key_id) => key_id,
            None => KeyId(<[u8; 8]>::try_from(id.as_slice()).map_err(|_| {
                Error::other(format_args!(
                    "{uri}: the key's CKA_ID is {} bytes, not an 8-byte minisign key id: set \
                     public_key in vmcast.toml to its minisign public key (vmcast.pub), whose key \
                     id is then used",
                    id.len()
                ))
            })?),
        };
        Ok(TokenKey {
            session: Mutex::new(self.session),
            _module: self.module,
            key,
            public: PublicKey {
                key_id,
                key: public,
            },
            uri: uri.shown.clone(),
        })
    }
}

/// A minisign key on a token, logged in. Sessions are not shared between
/// threads, so the build's signing threads take turns.
pub struct TokenKey {
    /// Declared before the module, so it closes before the module ends.
    session: Mutex<Session>,
    _module: Module,
    key: ObjectHandle,
    public: PublicKey,
    uri: String,
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenKey({}, {})", self.uri, self.public.key_id)
    }
}

impl TokenKey {
    /// Opens the token the URI names with the module of its `module-path`,
    /// else `module`; logs in (the PIN from the URI, else `prompt`); finds
    /// the ed25519 key and its public half, and checks that the token
    /// signs with `CKM_EDDSA`. Nothing is signed. The key id is `key_id`,
    /// else the key's `CKA_ID` when it is 8 bytes.
    pub fn open(
        uri: &Uri,
        module: Option<&Path>,
        key_id: Option<KeyId>,
        prompt: PinPrompt,
    ) -> Result<Self> {
        Opened::open(uri, module, false, prompt)?.into_key(uri, key_id)
    }
}

impl Signer for TokenKey {
    fn public(&self) -> &PublicKey {
        &self.public
    }

    fn sign_ed25519(&self, message: &[u8]) -> Result<EdSignature> {
        let session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let mechanism = Mechanism::Eddsa(EddsaParams::new(EddsaSignatureScheme::Pure));
        let signature = session
            .sign(&mechanism, self.key, message)
            .map_err(|e| match e {
                CkError::Pkcs11(
                    RvError::TokenNotPresent | RvError::DeviceRemoved | RvError::SessionClosed,
                    _,
                ) => Error::other(format_args!(
                    "{}: the token went away while signing",
                    self.uri
                )),
                e => Error::failed(format!("{}: the token cannot sign", self.uri), e),
            })?;
        let bytes: [u8; 64] = signature.as_slice().try_into().map_err(|_| {
            Error::other(format_args!(
                "{}: the token gave a {}-byte signature, not a 64-byte ed25519 one",
                self.uri,
                signature.len()
            ))
        })?;
        Ok(EdSignature::from_bytes(&bytes))
    }
}

/// Makes a new ed25519 key pair on the token, which never lets the secret
/// half out (sensitive, not extractable), labelled with the URI's
/// `object` and with its `id`, else 8 random bytes: the minisign key id.
pub fn generate(uri: &Uri, module: Option<&Path>, prompt: PinPrompt) -> Result<PublicKey> {
    let opened = new_key_slot(uri, module, prompt)?;
    let key_id = match &uri.id {
        Some(id) => key_id_of(uri, id)?,
        None => {
            let mut id = [0u8; 8];
            getrandom::fill(&mut id).map_err(|e| Error::failed("cannot get random bytes", e))?;
            KeyId(id)
        }
    };
    let label = uri.object.clone().unwrap_or_default().into_bytes();
    let public = [
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Label(label.clone()),
        Attribute::Id(key_id.0.to_vec()),
    ];
    let private = [
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::Label(label),
        Attribute::Id(key_id.0.to_vec()),
    ];
    opened
        .session
        .generate_key_pair(&Mechanism::EccEdwardsKeyPairGen, &public, &private)
        .map_err(|e| match e {
            CkError::Pkcs11(RvError::MechanismInvalid, _) => Error::other(format_args!(
                "{uri}: token `{}` cannot make ed25519 keys (CKM_EC_EDWARDS_KEY_PAIR_GEN)",
                opened.label
            )),
            e => Error::failed(
                format!(
                    "{uri}: token `{}` did not make an ed25519 key pair",
                    opened.label
                ),
                e,
            ),
        })?;
    prove(opened, uri, key_id)
}

/// Puts an existing minisign key on the token, so that the token signs
/// with the same public key: the secret half sensitive and not
/// extractable, with the key id as its `CKA_ID` and the URI's `object` as
/// its label, and a public key object beside it.
pub fn import(
    uri: &Uri,
    module: Option<&Path>,
    prompt: PinPrompt,
    key: &SecretKey,
) -> Result<PublicKey> {
    let key_id = key.public.key_id;
    if let Some(id) = &uri.id
        && id.as_slice() != key_id.0
    {
        return Err(Error::other(format_args!(
            "{uri}: id= is not the key's id ({}); leave id out, and the key's id is used",
            hex(&key_id.0)
        )));
    }
    let opened = new_key_slot(uri, module, prompt)?;
    let label = uri.object.clone().unwrap_or_default().into_bytes();
    let mut point = vec![0x04, 0x20];
    point.extend_from_slice(key.public.key.as_bytes());
    let public = [
        Attribute::Class(ObjectClass::PUBLIC_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(true),
        Attribute::Private(false),
        Attribute::Verify(true),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::EcPoint(point),
        Attribute::Label(label.clone()),
        Attribute::Id(key_id.0.to_vec()),
    ];
    let mut private = [
        Attribute::Class(ObjectClass::PRIVATE_KEY),
        Attribute::KeyType(KeyType::EC_EDWARDS),
        Attribute::Token(true),
        Attribute::Private(true),
        Attribute::Sensitive(true),
        Attribute::Extractable(false),
        Attribute::Sign(true),
        Attribute::EcParams(ED25519_OID.to_vec()),
        Attribute::Value(key.seed().to_vec()),
        Attribute::Label(label),
        Attribute::Id(key_id.0.to_vec()),
    ];
    let refused = |e| {
        Error::failed(
            format!(
                "{uri}: token `{}` did not take the ed25519 key",
                opened.label
            ),
            e,
        )
    };
    let created = opened.session.create_object(&private);
    for attr in &mut private {
        if let Attribute::Value(seed) = attr {
            seed.zeroize();
        }
    }
    let secret = created.map_err(refused)?;
    if let Err(e) = opened.session.create_object(&public) {
        // No half pair is left behind.
        let _ = opened.session.destroy_object(secret);
        return Err(refused(e));
    }
    prove(opened, uri, key_id)
}

/// A token ready for a new key the URI labels: logged in for writing, it
/// signs with `CKM_EDDSA`, and holds no key with that label or id yet.
fn new_key_slot(uri: &Uri, module: Option<&Path>, prompt: PinPrompt) -> Result<Opened> {
    let Some(label) = &uri.object else {
        return Err(Error::other(format_args!(
            "{uri}: name the new key with object=LABEL in the URI"
        )));
    };
    if let Some(id) = &uri.id {
        key_id_of(uri, id)?;
    }
    let opened = Opened::open(uri, module, true, prompt)?;
    opened.check_mechanism(uri)?;
    let taken = |attr: Attribute| {
        opened
            .session
            .find_objects(&[attr])
            .map(|found| !found.is_empty())
            .map_err(|e| Error::failed(format!("{uri}: cannot search token `{}`", opened.label), e))
    };
    let mut clash = taken(Attribute::Label(label.as_bytes().to_vec()))?;
    if let Some(id) = &uri.id {
        clash |= taken(Attribute::Id(id.clone()))?;
    }
    if clash {
        return Err(Error::other(format_args!(
            "{uri}: token `{}` already holds a key labelled `{label}`{}; keys on a token are \
             not overwritten: pick another object= (or delete the old one with `pkcs11-tool \
             --delete-object`)",
            opened.label,
            match uri.id {
                Some(_) => " or with that id",
                None => "",
            }
        )));
    }
    Ok(opened)
}

/// The minisign key id an `id=` gives: it must be 8 bytes.
fn key_id_of(uri: &Uri, id: &[u8]) -> Result<KeyId> {
    <[u8; 8]>::try_from(id).map(KeyId).map_err(|_| {
        Error::other(format_args!(
            "{uri}: id= is {} bytes; a new key's id is its minisign key id, 8 bytes (or leave \
             id out for a random one)",
            id.len()
        ))
    })
}

/// Finds the new key as a build would, and has it sign once: a key that
/// cannot sign is found now, not at the first release.
fn prove(opened: Opened, uri: &Uri, key_id: KeyId) -> Result<PublicKey> {
    let key = opened.into_key(uri, Some(key_id))?;
    key.sign(b"vmcast-gen keygen --pkcs11", "a new key's first signature")?;
    Ok(key.public.clone())
}

/// The 32 bytes of an ed25519 `CKA_EC_POINT`: DER-wrapped in an OCTET
/// STRING, as PKCS#11 3.0 says and SoftHSM writes, or bare, as some
/// tokens have it.
fn ed25519_point(point: &[u8]) -> Option<[u8; 32]> {
    match point {
        [0x04, 0x20, rest @ ..] if rest.len() == 32 => rest.try_into().ok(),
        bare => bare.try_into().ok(),
    }
}

/// What a key that is not ed25519 is, for an error.
fn key_kind(t: KeyType) -> String {
    if t == KeyType::RSA {
        "an RSA key".into()
    } else if t == KeyType::EC {
        "an ECDSA key (CKK_EC)".into()
    } else {
        format!("a {t} key")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_and_hide_the_pin() {
        let uri = Uri::parse(
            "pkcs11:token=my%20token;object=vmcast;id=%01%02;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=12%334",
        )
        .unwrap();
        assert_eq!(uri.token.as_deref(), Some("my token"));
        assert_eq!(uri.object.as_deref(), Some("vmcast"));
        assert_eq!(uri.id.as_deref(), Some(&[1u8, 2][..]));
        assert_eq!(uri.pin_value.as_deref().map(String::as_str), Some("1234"));
        assert_eq!(
            uri.module_path.as_deref(),
            Some(Path::new("/usr/lib/softhsm/libsofthsm2.so"))
        );
        let shown = uri.to_string();
        assert_eq!(
            shown,
            "pkcs11:token=my%20token;object=vmcast;id=%01%02;type=private\
             ?module-path=/usr/lib/softhsm/libsofthsm2.so"
        );
        assert!(!format!("{uri:?}").contains("12%334"));
        assert_eq!(shown_of("pkcs11:token=a?pin-value=1"), "pkcs11:token=a");
        let file = Uri::parse("PKCS11:token=a?pin-source=file:/run/pin").unwrap();
        assert_eq!(file.pin_source.as_deref(), Some(Path::new("/run/pin")));
    }

    fn shown_of(text: &str) -> String {
        Uri::parse(text).unwrap().to_string()
    }

    #[test]
    fn bad_uris_say_why_without_the_pin() {
        for (text, why) in [
            ("vmcast.key", "not a pkcs11: URI"),
            ("pkcs11:token=a;token=b", "`token` is given twice"),
            ("pkcs11:token=a;colour=red", "unknown attribute `colour`"),
            ("pkcs11:token=a;type=public", "type=public"),
            ("pkcs11:slot-id=x", "slot-id `x` is not a number"),
            (
                "pkcs11:token=a?module-name=softhsm2",
                "module-name is not supported",
            ),
            (
                "pkcs11:token=a?pin-source=|cat",
                "pin-source must name a file",
            ),
            ("pkcs11:token=a?pin-value", "`pin-value` is not name=value"),
            ("pkcs11:token=a?pin-value=1&pin-source=/p", "not both"),
        ] {
            let e = Uri::parse(text).unwrap_err();
            assert!(e.contains(why), "{text}: {e}");
        }
        let e = Uri::parse("pkcs11:token=a?pin-value=secret&pin-value=secret").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn ec_points_are_read_wrapped_or_bare() {
        let mut wrapped = vec![0x04, 0x20];
        wrapped.extend_from_slice(&[7; 32]);
        assert_eq!(ed25519_point(&wrapped), Some([7; 32]));
        assert_eq!(ed25519_point(&[7; 32]), Some([7; 32]));
        assert_eq!(ed25519_point(&[7; 33]), None);
    }
}
