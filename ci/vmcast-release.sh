#!/usr/bin/env bash
# A release of a VMcast from a stateless CI runner: build on the published site,
# publish, verify the live site. The logic of the GitHub Action (action.yml);
# it runs as well from any CI, or by hand.
#
# Inputs, from the environment (empty means unset):
#   VMCAST_CONFIG        the site configuration (default vmcast.toml)
#   VMCAST_PREVIOUS      the published site to build on: its https URL, s3://bucket/prefix or a
#                        directory. Releases whose images are not on this runner keep the
#                        published facts, unread. Leave it empty for the very first release only.
#   VMCAST_PUBLISH       s3://bucket/prefix to upload to (images first, feed.xml last, nothing
#                        deleted); empty to leave the built site in the config's output_dir
#   VMCAST_ENDPOINT_URL  an S3-compatible endpoint (MinIO, R2, Ceph, ...), for s3:// above
#   VMCAST_ACL           a canned ACL for every uploaded object (public-read), for buckets that
#                        use ACLs rather than a bucket policy
#   VMCAST_VERIFY_URL    the site's public URL: `verify --images` runs there after publishing
#   VMCAST_PUBKEY        the public key verify pins (default vmcast.pub)
# Secrets, from the environment:
#   VMCAST_SECRET_KEY    the contents of the minisign secret key file; or, with no key on the
#                        runner at all, leave it unset and name a key on a PKCS#11 token in the
#                        config's secret_key (a pkcs11: URI; the module from its module-path or
#                        VMCAST_PKCS11_MODULE), and pass the token's PIN in:
#   VMCAST_PKCS11_PIN    the user PIN of that token
#   VMCAST_KEY_PASSWORD  the key file's password, if it is encrypted
#   AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, AWS_REGION), or
#   AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN: for any s3:// above
# SOURCE_DATE_EPOCH, when set, is the build time (and the site's sequence). Else the build takes
# the clock's, or one above the previous site's when this runner's clock is behind it, so that
# runners a second apart or with skewed clocks do not fail a release. Under GitHub Actions the
# sequence the build reports is also written to $GITHUB_OUTPUT (the action's `sequence`), so a
# later job can tell when the live site is this build.
#
# Everything is checked before the first command runs, so a missing secret or a typo fails
# in a second, before any image is read or any object uploaded.
set -euo pipefail

die() {
  printf 'vmcast-release: error: %s\n' "$*" >&2
  exit 1
}

step() {
  printf '==> %s\n' "$*"
}

# Prints the command, then runs it.
run() {
  printf '+'
  printf ' %q' "$@"
  printf '\n'
  "$@"
}

# A CI secret that is not defined reaches the job as an empty variable (GitHub's
# `${{ secrets.X }}`): treat set-but-empty as unset, so each check below sees it missing.
for name in VMCAST_KEY_PASSWORD VMCAST_PKCS11_PIN AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN \
  AWS_REGION AWS_DEFAULT_REGION AWS_ENDPOINT_URL AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN; do
  if [ -z "${!name:-}" ]; then
    unset "$name"
  fi
done

config=${VMCAST_CONFIG:-vmcast.toml}
previous=${VMCAST_PREVIOUS:-}
publish=${VMCAST_PUBLISH:-}
endpoint=${VMCAST_ENDPOINT_URL:-}
acl=${VMCAST_ACL:-}
verify_url=${VMCAST_VERIFY_URL:-}
pubkey=${VMCAST_PUBKEY:-vmcast.pub}

command -v vmcast-gen >/dev/null \
  || die "vmcast-gen is not on PATH: install it first (the action does, with ci/vmcast-install.sh; or cargo install --locked --path <a checkout of vmcast-gen>)"
[ -f "$config" ] || die "no site configuration $config (VMCAST_CONFIG) in $PWD"
[ -n "${VMCAST_SECRET_KEY:-}" ] || [ -n "${VMCAST_PKCS11_PIN:-}" ] \
  || die "VMCAST_SECRET_KEY is not set: pass the secret key file's contents from a CI secret \
(and VMCAST_KEY_PASSWORD if the key is encrypted); or, for a key on a PKCS#11 token that the \
config's secret_key names, the token's PIN in VMCAST_PKCS11_PIN"
case "$publish" in
  "" | s3://?*) ;;
  *) die "VMCAST_PUBLISH=$publish: publish to s3://bucket/prefix, or leave it empty" ;;
esac
case "$verify_url" in
  "" | http://?* | https://?*) ;;
  *) die "VMCAST_VERIFY_URL=$verify_url: verify the site at its http(s) URL" ;;
esac
if [ -n "$verify_url" ] && [ ! -f "$pubkey" ]; then
  die "no public key $pubkey (VMCAST_PUBKEY) in $PWD: verify pins the key the site must be signed with"
fi
if [[ "$publish" == s3://* || "$previous" == s3://* ]]; then
  if [ -z "${AWS_WEB_IDENTITY_TOKEN_FILE:-}" ]; then
    for name in AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
      [ -n "${!name:-}" ] || die "$name is not set: s3:// needs AWS credentials from CI secrets \
(AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY), or a role (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)"
    done
  fi
fi

printf 'vmcast-release: %s, config %s\n' "$(vmcast-gen --version)" "$config"
reports=$(mktemp -d)
trap 'rm -rf "$reports"' EXIT

build=(vmcast-gen build --config "$config")
if [ -n "$previous" ]; then
  step "build on the published site $previous"
  build+=(--previous "$previous")
  if [[ "$previous" == s3://* && -n "$endpoint" ]]; then
    build+=(--endpoint-url "$endpoint")
  fi
else
  step "build (no previous site: every release's images must be here)"
fi
run "${build[@]}" | tee "$reports/build"
# The build's `Signed ...` line names the sequence it signed: verify tells this build by it.
sequence=$(sed -n 's/^Signed .* with key [0-9A-F]*, sequence \([0-9][0-9]*\)$/\1/p' "$reports/build")
[ -n "$sequence" ] || die "the build reported no sequence"
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  printf 'sequence=%s\n' "$sequence" >>"$GITHUB_OUTPUT"
fi

if [ -n "$publish" ]; then
  step "publish to $publish (images first, feed.xml last, nothing deleted)"
  upload=(vmcast-gen publish "$publish" --config "$config")
  if [ -n "$endpoint" ]; then
    upload+=(--endpoint-url "$endpoint")
  fi
  if [ -n "$acl" ]; then
    upload+=(--acl "$acl")
  fi
  run "${upload[@]}"
else
  step "publish: skipped (VMCAST_PUBLISH is empty; the site is in the config's output_dir)"
fi

if [ -n "$verify_url" ]; then
  step "verify $verify_url, images and all"
  report=$reports/verify
  run vmcast-gen verify "$verify_url" --pubkey "$pubkey" --images | tee "$report"
  # Only a site this run published must be this build; a live site deployed later
  # (GitHub Pages) is still the previous one here.
  if [ -n "$publish" ] && ! grep -q "^verified: .*, sequence $sequence\$" "$report"; then
    die "$verify_url does not serve this build (sequence $sequence) but an older one: \
is a cache in front of it? Verify the origin, or again once the cache expires"
  fi
else
  step "verify: skipped (VMCAST_VERIFY_URL is empty)"
fi
step "done"
