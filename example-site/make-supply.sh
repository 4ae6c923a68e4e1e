#!/bin/sh
# Regenerates the example supply-chain files of webapp 1.4.0's qcow2 image:
#   webapp-1.4.0.qcow2.spdx.json     SPDX 2.3 SBOM (picked up by its name)
#   webapp-1.4.0.cdx.json            CycloneDX 1.6 SBOM (named in release.toml)
#   webapp-1.4.0.qcow2.intoto.jsonl  SLSA provenance in a DSSE envelope, signed with the
#                                    TEST-ONLY builder key (ed25519) in example-site/keys/
# The provenance's subject is the image's SHA-256, so run this after make-images.sh.
# Needs python3 and openssl (1.1.1 or later, for ed25519 with -rawin).
#
# Usage: sh example-site/make-supply.sh   (from the repository root)
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
d="$here/releases/webapp/1.4.0"
key="$here/keys/TEST-ONLY-DO-NOT-USE.builder.pem"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

image=webapp-1.4.0.qcow2
sha=$(sha256sum "$d/$image" | cut -d' ' -f1)
# The key id vmcast-gen gives the key: SHA-256 of its SubjectPublicKeyInfo DER.
keyid=$(openssl pkey -in "$key" -pubout -outform DER | sha256sum | cut -d' ' -f1)

python3 - "$d" "$image" "$sha" "$tmp" <<'PY'
import json, sys
d, image, sha, tmp = sys.argv[1:]
url = "https://downloads.example.com/appliances/images/webapp/1.4.0/" + image
created = "2026-05-12T00:00:00Z"
openssl = ("openssl", "3.0.15-1~deb12u1", "pkg:deb/debian/openssl@3.0.15-1~deb12u1?arch=amd64")
nginx = ("nginx", "1.22.1-9", "pkg:deb/debian/nginx@1.22.1-9?arch=amd64")

spdx = {
    "spdxVersion": "SPDX-2.3",
    "dataLicense": "CC0-1.0",
    "SPDXID": "SPDXRef-DOCUMENT",
    "name": image,
    "documentNamespace": "https://downloads.example.com/appliances/sbom/webapp-1.4.0-qcow2",
    "creationInfo": {"created": created, "creators": ["Tool: example-site/make-supply.sh"]},
    "packages": [
        {"name": image, "SPDXID": "SPDXRef-Image", "versionInfo": "1.4.0",
         "downloadLocation": url, "filesAnalyzed": False,
         "primaryPackagePurpose": "OPERATING-SYSTEM",
         "checksums": [{"algorithm": "SHA256", "checksumValue": sha}]},
    ] + [
        {"name": n, "SPDXID": "SPDXRef-Pkg-" + n, "versionInfo": v,
         "downloadLocation": "NOASSERTION", "filesAnalyzed": False,
         "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl",
                           "referenceLocator": p}]}
        for n, v, p in (nginx, openssl)
    ],
    "relationships": [
        {"spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES",
         "relatedSpdxElement": "SPDXRef-Image"},
    ] + [
        {"spdxElementId": "SPDXRef-Image", "relationshipType": "CONTAINS",
         "relatedSpdxElement": "SPDXRef-Pkg-" + n}
        for n in ("nginx", "openssl")
    ],
}
with open(f"{d}/{image}.spdx.json", "w") as f:
    json.dump(spdx, f, indent=2)
    f.write("\n")

cdx = {
    "bomFormat": "CycloneDX",
    "specVersion": "1.6",
    "serialNumber": "urn:uuid:6f1c1d1e-0140-4000-8000-000000000140",
    "version": 1,
    "metadata": {
        "timestamp": created,
        "component": {"type": "operating-system", "bom-ref": "image", "name": "webapp",
                      "version": "1.4.0",
                      "hashes": [{"alg": "SHA-256", "content": sha}]},
    },
    "components": [
        {"type": "library", "bom-ref": n, "name": n, "version": v, "purl": p}
        for n, v, p in (nginx, openssl)
    ],
    "dependencies": [{"ref": "image", "dependsOn": ["nginx", "openssl"]}],
}
with open(f"{d}/webapp-1.4.0.cdx.json", "w") as f:
    json.dump(cdx, f, indent=2)
    f.write("\n")

statement = {
    "_type": "https://in-toto.io/Statement/v1",
    "subject": [{"name": image, "digest": {"sha256": sha}}],
    "predicateType": "https://slsa.dev/provenance/v1",
    "predicate": {
        "buildDefinition": {
            "buildType": "https://example.com/appliance-build/v1",
            "externalParameters": {"repository": "https://git.example.com/webapp.git",
                                   "ref": "refs/tags/v1.4.0"},
            "resolvedDependencies": [{"uri": "git+https://git.example.com/webapp.git",
                                      "digest": {"gitCommit": "4b825dc642cb6eb9a060e54bf8d69288fbee4904"}}],
        },
        "runDetails": {"builder": {"id": "https://ci.example.com/builders/appliance"},
                       "metadata": {"startedOn": "2026-05-11T22:00:00Z",
                                    "finishedOn": "2026-05-11T22:41:00Z"}},
    },
}
payload = json.dumps(statement, separators=(",", ":"), sort_keys=True).encode()
ptype = b"application/vnd.in-toto+json"
pae = b"DSSEv1 %d %s %d %s" % (len(ptype), ptype, len(payload), payload)
open(f"{tmp}/payload", "wb").write(payload)
open(f"{tmp}/pae", "wb").write(pae)
PY

openssl pkeyutl -sign -inkey "$key" -rawin -in "$tmp/pae" -out "$tmp/sig"
python3 - "$d/$image.intoto.jsonl" "$tmp" "$keyid" <<'PY'
import base64, json, sys
out, tmp, keyid = sys.argv[1:]
b64 = lambda p: base64.b64encode(open(f"{tmp}/{p}", "rb").read()).decode()
envelope = {"payloadType": "application/vnd.in-toto+json", "payload": b64("payload"),
            "signatures": [{"keyid": keyid, "sig": b64("sig")}]}
with open(out, "w") as f:
    f.write(json.dumps(envelope, separators=(",", ":")) + "\n")
PY
ls -l "$d"/*.json "$d"/*.jsonl
