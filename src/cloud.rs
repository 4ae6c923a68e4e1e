//! Cloud images: a release published in a cloud provider's catalog, named
//! by provider, region and image id. The feed carries the id, which the
//! feed's signature covers; nothing of the image behind it is read or
//! hashed, so the provider is trusted for its content (docs/feed-format.md).
//!
//! Each id and region is checked against the provider's own syntax, so a
//! typo fails the build instead of reaching consumers.

use std::fmt;

/// A cloud whose image ids a release may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Aws,
    Gcp,
    Azure,
}

impl Provider {
    const ALL: [Provider; 3] = [Provider::Aws, Provider::Gcp, Provider::Azure];

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Aws => "aws",
            Provider::Gcp => "gcp",
            Provider::Azure => "azure",
        }
    }

    /// The name people know it by, for the landing page.
    pub fn title(self) -> &'static str {
        match self {
            Provider::Aws => "AWS",
            Provider::Gcp => "Google Cloud",
            Provider::Azure => "Azure",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown cloud provider `{}`; expected aws, gcp or azure",
                    s.escape_debug()
                )
            })
    }

    /// Checks a region for this provider; `None` is allowed only for gcp,
    /// whose images are global.
    pub fn check_region(self, region: Option<&str>) -> Result<(), String> {
        let Some(region) = region else {
            return match self {
                Provider::Gcp => Ok(()),
                Provider::Aws => Err("an aws image needs `region`, like `eu-west-1`".into()),
                Provider::Azure => {
                    Err("an azure image needs `region`, its location, like `westeurope`".into())
                }
            };
        };
        let ok = match self {
            Provider::Aws => aws_region(region),
            Provider::Gcp => gcp_location(region),
            Provider::Azure => azure_location(region),
        };
        if ok {
            return Ok(());
        }
        let expected = match self {
            Provider::Aws => "an AWS region, like `eu-west-1` or `us-gov-west-1`",
            Provider::Gcp => {
                "a Google Cloud region, like `europe-west1`, or a multi-region: `us`, `eu` or \
                 `asia` (leave it out for a global image)"
            }
            Provider::Azure => {
                "an Azure location's name, like `westeurope` or `eastus2` (not its display \
                 name, `West Europe`)"
            }
        };
        Err(format!(
            "invalid {self} region `{}`: expected {expected}",
            region.escape_debug()
        ))
    }

    /// Checks an image id for this provider, and gives it in the form the
    /// feed carries: as written, but for an Azure id, whose fixed segments
    /// and subscription id Azure compares without regard to case, written
    /// in its canonical case (`resourceGroups`, `Microsoft.Compute`, a
    /// lower-case subscription id), so consumers can compare ids bytewise.
    pub fn canonical_id(self, id: &str) -> Result<String, String> {
        let checked = match self {
            Provider::Aws if ami_id(id) => Ok(id.to_owned()),
            Provider::Aws => Err("expected `ami-` and 8 or 17 lower-case hex digits, like \
                                  `ami-0abc1234def567890`"
                .to_owned()),
            Provider::Gcp => gcp_image(id).map(|()| id.to_owned()),
            Provider::Azure => azure_image_version(id),
        };
        checked.map_err(|p| format!("invalid {self} image id `{}`: {p}", id.escape_debug()))
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `ami-` and 8 or 17 lower-case hex digits.
fn ami_id(id: &str) -> bool {
    id.strip_prefix("ami-")
        .is_some_and(|hex| matches!(hex.len(), 8 | 17) && lower_hex(hex))
}

/// `eu-west-1`, `ap-southeast-2`, `us-gov-west-1`, `us-isob-east-1`:
/// a two-letter area, one or two words, a number.
fn aws_region(r: &str) -> bool {
    let parts: Vec<&str> = r.split('-').collect();
    let word = |p: &&str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase());
    match parts.as_slice() {
        [area, words @ .., number] => {
            area.len() == 2
                && word(area)
                && (1..=2).contains(&words.len())
                && words.iter().all(word)
                && !number.is_empty()
                && number.len() <= 2
                && number.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

/// `europe-west1`, `us-central1`, `northamerica-northeast2`, or a
/// multi-region.
fn gcp_location(r: &str) -> bool {
    if matches!(r, "us" | "eu" | "asia") {
        return true;
    }
    let Some((area, rest)) = r.split_once('-') else {
        return false;
    };
    let letters = rest.trim_end_matches(|c: char| c.is_ascii_digit());
    let digits = &rest[letters.len()..];
    !area.is_empty()
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && !letters.is_empty()
        && letters.bytes().all(|b| b.is_ascii_lowercase())
        && (1..=2).contains(&digits.len())
}

/// `westeurope`, `eastus2`: lower-case letters and digits, a letter first.
fn azure_location(r: &str) -> bool {
    r.len() <= 40
        && r.starts_with(|c: char| c.is_ascii_lowercase())
        && r.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// A resource name of Google Cloud: `[a-z]([-a-z0-9]{0,61}[a-z0-9])?`.
fn gcp_name(name: &str) -> bool {
    let b = name.as_bytes();
    (1..=63).contains(&b.len())
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[b.len() - 1] != b'-'
}

/// A project id: 6 to 30 of `[-a-z0-9]`, a letter first, no `-` last.
fn gcp_project(p: &str) -> bool {
    (6..=30).contains(&p.len()) && gcp_name(p)
}

/// An image name, or `projects/<project>/global/images/<name>`.
fn gcp_image(id: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected an image name (`[a-z]([-a-z0-9]{0,61}[a-z0-9])?`) or \
                            `projects/<project>/global/images/<name>`";
    let Some(rest) = id.strip_prefix("projects/") else {
        return match gcp_name(id) {
            true => Ok(()),
            false => Err(EXPECTED.into()),
        };
    };
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [project, "global", "images", name] if gcp_project(project) && gcp_name(name) => Ok(()),
        [_, "global", "images", "family", _] => Err(
            "an image family names whichever image is newest, not one image: name the image".into(),
        ),
        [project, ..] if !gcp_project(project) => Err(format!(
            "the project `{}` is not a project id (6 to 30 of a-z, 0-9 and -, a letter first); \
             {EXPECTED}",
            project.escape_debug()
        )),
        _ => Err(EXPECTED.into()),
    }
}

/// A gallery image version id:
/// `/subscriptions/<GUID>/resourceGroups/<group>/providers/Microsoft.Compute/galleries/<gallery>/images/<image>/versions/<major.minor.patch>`.
/// Azure compares the fixed segments without regard to case; the id comes
/// back in canonical case.
fn azure_image_version(id: &str) -> Result<String, String> {
    const EXPECTED: &str = "expected a gallery image version id, /subscriptions/<subscription \
                            id>/resourceGroups/<group>/providers/Microsoft.Compute/galleries/\
                            <gallery>/images/<image>/versions/<major.minor.patch>";
    let parts: Vec<&str> = id.split('/').collect();
    let [
        "",
        subscriptions,
        subscription,
        groups,
        group,
        providers,
        compute,
        galleries,
        gallery,
        images,
        image,
        versions,
        version,
    ] = parts.as_slice()
    else {
        return Err(EXPECTED.into());
    };
    let fixed = [
        (subscriptions, "subscriptions"),
        (groups, "resourceGroups"),
        (providers, "providers"),
        (compute, "Microsoft.Compute"),
        (galleries, "galleries"),
        (images, "images"),
        (versions, "versions"),
    ];
    if !fixed
        .iter()
        .all(|(got, want)| got.eq_ignore_ascii_case(want))
    {
        return Err(EXPECTED.into());
    }
    let problem = if !guid(subscription) {
        format!(
            "the subscription id `{}` is not a GUID",
            subscription.escape_debug()
        )
    } else if !resource_group(group) {
        format!(
            "the resource group `{}` is not a group name (1 to 90 letters, digits and \
             - _ . ( ), not ending in .)",
            group.escape_debug()
        )
    } else if !gallery_name(gallery, false) {
        format!(
            "the gallery `{}` is not a gallery name (1 to 80 letters, digits, _ and ., \
             a letter or digit at each end)",
            gallery.escape_debug()
        )
    } else if !gallery_name(image, true) {
        format!(
            "the image definition `{}` is not an image name (1 to 80 letters, digits, \
             -, _ and ., a letter or digit at each end)",
            image.escape_debug()
        )
    } else if !semantic_version(version) {
        format!(
            "the version `{}` is not major.minor.patch, like 1.2.3",
            version.escape_debug()
        )
    } else {
        return Ok(format!(
            "/subscriptions/{}/resourceGroups/{group}/providers/Microsoft.Compute/galleries/\
             {gallery}/images/{image}/versions/{version}",
            subscription.to_ascii_lowercase()
        ));
    };
    Err(format!("{problem}; {EXPECTED}"))
}

/// `8-4-4-4-12` hex digits.
fn guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn resource_group(g: &str) -> bool {
    (1..=90).contains(&g.chars().count())
        && g.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.' | '(' | ')'))
        && !g.ends_with('.')
}

/// A gallery name (`_` and `.` inside) or, with `hyphen`, an image
/// definition name (`-` too).
fn gallery_name(n: &str, hyphen: bool) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.' || (hyphen && c == '-');
    (1..=80).contains(&n.len())
        && n.chars().all(inner)
        && n.starts_with(|c: char| c.is_ascii_alphanumeric())
        && n.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Three 32-bit numbers: `1.2.3`.
fn semantic_version(v: &str) -> bool {
    let parts: Vec<&str> = v.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u32>().is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const AZURE: &str = "/subscriptions/0b1f6471-1bf0-4dda-aec3-cb9272f09590/resourceGroups/\
                         images-rg/providers/Microsoft.Compute/galleries/appliances/images/\
                         webapp/versions/1.4.0";

    #[test]
    fn ids_that_providers_issue_are_accepted() {
        for (provider, id) in [
            (Provider::Aws, "ami-0abc1234def567890"),
            (Provider::Aws, "ami-12345678"),
            (Provider::Gcp, "webapp-1-4-0"),
            (
                Provider::Gcp,
                "projects/debian-cloud/global/images/debian-12-bookworm-v20240110",
            ),
            (Provider::Azure, AZURE),
        ] {
            assert_eq!(
                provider.canonical_id(id).as_deref(),
                Ok(id),
                "{provider} {id}"
            );
        }
        let shouted = AZURE
            .replace("resourceGroups", "resourcegroups")
            .replace("Microsoft.Compute", "microsoft.compute")
            .replace("0b1f6471-1bf0-4dda-aec3", "0B1F6471-1BF0-4DDA-AEC3");
        assert_eq!(Provider::Azure.canonical_id(&shouted).as_deref(), Ok(AZURE));
        for (provider, region) in [
            (Provider::Aws, Some("eu-west-1")),
            (Provider::Aws, Some("us-gov-west-1")),
            (Provider::Gcp, None),
            (Provider::Gcp, Some("europe-west1")),
            (Provider::Gcp, Some("eu")),
            (Provider::Azure, Some("westeurope")),
            (Provider::Azure, Some("eastus2")),
        ] {
            assert_eq!(
                provider.check_region(region),
                Ok(()),
                "{provider} {region:?}"
            );
        }
    }

    #[test]
    fn malformed_ids_and_regions_say_what_is_wrong() {
        for (provider, id) in [
            (Provider::Aws, "ami-0ABC1234DEF567890"),
            (Provider::Aws, "ami-0abc1234def56789"),
            (Provider::Aws, "0abc1234def567890"),
            (Provider::Gcp, "Webapp"),
            (Provider::Gcp, "webapp-"),
            (Provider::Gcp, &"a".repeat(64)),
            (Provider::Gcp, "projects/p/global/images/webapp"),
            (Provider::Azure, &AZURE.replace("1.4.0", "1.4")),
            (Provider::Azure, &AZURE.replace("0b1f6471-", "0b1f6471")),
            (
                Provider::Azure,
                &AZURE.replace("/galleries/appliances", "/galleries/-a"),
            ),
            (
                Provider::Azure,
                &AZURE.replace("Microsoft.Compute", "Microsoft.Storage"),
            ),
            (Provider::Azure, "webapp"),
        ] {
            assert!(provider.canonical_id(id).is_err(), "{provider} {id}");
        }
        assert_eq!(
            Provider::Gcp.canonical_id("projects/debian-cloud/global/images/family/debian-12"),
            Err(
                "invalid gcp image id `projects/debian-cloud/global/images/family/debian-12`: an \
                 image family names whichever image is newest, not one image: name the image"
                    .into()
            )
        );
        assert!(
            Provider::Azure
                .canonical_id(&AZURE.replace("1.4.0", "1.4"))
                .unwrap_err()
                .contains("the version `1.4` is not major.minor.patch")
        );
        for (provider, region) in [
            (Provider::Aws, None),
            (Provider::Aws, Some("eu-west")),
            (Provider::Aws, Some("EU-west-1")),
            (Provider::Gcp, Some("europe-west")),
            (Provider::Azure, None),
            (Provider::Azure, Some("West Europe")),
        ] {
            assert!(
                provider.check_region(region).is_err(),
                "{provider} {region:?}"
            );
        }
        assert_eq!(
            Provider::parse("oracle"),
            Err("unknown cloud provider `oracle`; expected aws, gcp or azure".into())
        );
    }
}
