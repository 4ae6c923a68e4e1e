#!/bin/sh
# Regenerates the example disk images under example-site/releases/ with qemu-img.
# The images were made once with this script (qemu-img 10.0.2, GNU tar 1.34, xz 5.4)
# and checked in; re-running it changes the hashes of the .vhd and .vhdx.xz files,
# because qemu-img writes random UUIDs / timestamps into those formats.
# It never touches the keys in example-site/keys/.
#
# Usage: sh example-site/make-images.sh   (from the repository root)
set -eu
cd "$(dirname "$0")/releases"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# A sparse raw "source disk" of the given virtual size whose first sector carries a
# text marker, so every release's disk has distinct content.
mkdisk() { # mkdisk FILE SIZE MARKER
    truncate -s "$2" "$1"
    printf 'vmcast-gen example appliance disk: %s\nThis is NOT a bootable system; it exists to test feed generation.\n' "$3" |
        dd of="$1" conv=notrunc status=none
}

# qemu-img writes a random CID into every VMDK descriptor; pin it so the files are reproducible.
pin_vmdk_cid() { # pin_vmdk_cid FILE CID(8 hex)
    python3 - "$1" "$2" <<'PY'
import re, sys
path, cid = sys.argv[1], sys.argv[2].encode()
data = bytearray(open(path, "rb").read())
m = re.search(rb"\nCID=([0-9a-f]{8})\n", data)
assert m, "no CID line"
data[m.start(1):m.end(1)] = cid
open(path, "wb").write(data)
PY
}

# --- webapp 1.4.0: qcow2 + vmdk (monolithicSparse), 1 GiB virtual ---
d=webapp/1.4.0
mkdisk "$tmp/webapp-1.4.0.raw" 1G "webapp 1.4.0"
rm -f "$d/webapp-1.4.0.qcow2" "$d/webapp-1.4.0.vmdk"
qemu-img convert -f raw -O qcow2 -o compat=1.1 "$tmp/webapp-1.4.0.raw" "$d/webapp-1.4.0.qcow2"
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$tmp/webapp-1.4.0.raw" "$d/webapp-1.4.0.vmdk"
pin_vmdk_cid "$d/webapp-1.4.0.vmdk" 14014000

# --- webapp 1.3.2: qcow2 + vhdx (xz-compressed), 1 GiB virtual ---
# A VHDX can't be small: qemu-img lays out header(1 MiB) + log(>=1 MiB) + BAT + metadata regions
# on 1 MiB boundaries and ends the file at 8 MiB, plus one 1 MiB data block = 9 MiB of mostly
# zeros. Compressed with xz it is ~2 KB, so it ships as .vhdx.xz.
d=webapp/1.3.2
mkdisk "$tmp/webapp-1.3.2.raw" 1G "webapp 1.3.2"
rm -f "$d/webapp-1.3.2.qcow2" "$d/webapp-1.3.2.vhdx" "$d/webapp-1.3.2.vhdx.xz"
qemu-img convert -f raw -O qcow2 -o compat=1.1 "$tmp/webapp-1.3.2.raw" "$d/webapp-1.3.2.qcow2"
qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=1M,log_size=1M "$tmp/webapp-1.3.2.raw" "$tmp/webapp-1.3.2.vhdx"
xz -9 --check=crc64 -c "$tmp/webapp-1.3.2.vhdx" > "$d/webapp-1.3.2.vhdx.xz"

# --- dbnode 2.0.0: OVA = ustar(dbnode.ovf, streamOptimized vmdk, dbnode.mf), 512 MiB virtual ---
d=dbnode/2.0.0
o="$tmp/ova"; mkdir "$o"
mkdisk "$tmp/dbnode-2.0.0.raw" 512M "dbnode 2.0.0"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$tmp/dbnode-2.0.0.raw" "$o/dbnode-2.0.0-disk1.vmdk"
pin_vmdk_cid "$o/dbnode-2.0.0-disk1.vmdk" 20020000
vmdk_size=$(stat -c %s "$o/dbnode-2.0.0-disk1.vmdk")
cat > "$o/dbnode.ovf" <<OVF
<?xml version="1.0" encoding="UTF-8"?>
<!-- OVF 1.0 descriptor for the dbnode 2.0.0 example appliance (test data for vmcast-gen). -->
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
          xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"
          xmlns:vssd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_VirtualSystemSettingData"
          xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
          ovf:version="1.0">
  <References>
    <File ovf:id="file1" ovf:href="dbnode-2.0.0-disk1.vmdk" ovf:size="$vmdk_size"/>
  </References>
  <DiskSection>
    <Info>Virtual disk information</Info>
    <Disk ovf:diskId="vmdisk1" ovf:fileRef="file1" ovf:capacity="512" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>The list of logical networks</Info>
    <Network ovf:name="VM Network">
      <Description>The VM Network network</Description>
    </Network>
  </NetworkSection>
  <VirtualSystem ovf:id="dbnode-2.0.0">
    <Info>A virtual machine</Info>
    <Name>dbnode-2.0.0</Name>
    <AnnotationSection>
      <Info>A human-readable annotation</Info>
      <Annotation>dbnode 2.0.0 (beta) - example appliance for vmcast-gen; the disk is empty.</Annotation>
    </AnnotationSection>
    <OperatingSystemSection ovf:id="101">
      <Info>The kind of installed guest operating system</Info>
      <Description>Other Linux (64-bit)</Description>
    </OperatingSystemSection>
    <VirtualHardwareSection>
      <Info>Virtual hardware requirements</Info>
      <System>
        <vssd:ElementName>Virtual Hardware Family</vssd:ElementName>
        <vssd:InstanceID>0</vssd:InstanceID>
        <vssd:VirtualSystemIdentifier>dbnode-2.0.0</vssd:VirtualSystemIdentifier>
        <vssd:VirtualSystemType>vmx-14</vssd:VirtualSystemType>
      </System>
      <Item>
        <rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits>
        <rasd:Description>Number of Virtual CPUs</rasd:Description>
        <rasd:ElementName>2 virtual CPU(s)</rasd:ElementName>
        <rasd:InstanceID>1</rasd:InstanceID>
        <rasd:ResourceType>3</rasd:ResourceType>
        <rasd:VirtualQuantity>2</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits>
        <rasd:Description>Memory Size</rasd:Description>
        <rasd:ElementName>2048MB of memory</rasd:ElementName>
        <rasd:InstanceID>2</rasd:InstanceID>
        <rasd:ResourceType>4</rasd:ResourceType>
        <rasd:VirtualQuantity>2048</rasd:VirtualQuantity>
      </Item>
      <Item>
        <rasd:Address>0</rasd:Address>
        <rasd:Description>SCSI Controller</rasd:Description>
        <rasd:ElementName>SCSI Controller 0</rasd:ElementName>
        <rasd:InstanceID>3</rasd:InstanceID>
        <rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>
        <rasd:ResourceType>6</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>0</rasd:AddressOnParent>
        <rasd:ElementName>Hard Disk 1</rasd:ElementName>
        <rasd:HostResource>ovf:/disk/vmdisk1</rasd:HostResource>
        <rasd:InstanceID>4</rasd:InstanceID>
        <rasd:Parent>3</rasd:Parent>
        <rasd:ResourceType>17</rasd:ResourceType>
      </Item>
      <Item>
        <rasd:AddressOnParent>7</rasd:AddressOnParent>
        <rasd:AutomaticAllocation>true</rasd:AutomaticAllocation>
        <rasd:Connection>VM Network</rasd:Connection>
        <rasd:Description>E1000 ethernet adapter on "VM Network"</rasd:Description>
        <rasd:ElementName>Network adapter 1</rasd:ElementName>
        <rasd:InstanceID>5</rasd:InstanceID>
        <rasd:ResourceSubType>E1000</rasd:ResourceSubType>
        <rasd:ResourceType>10</rasd:ResourceType>
      </Item>
    </VirtualHardwareSection>
  </VirtualSystem>
</Envelope>
OVF
( cd "$o" && for f in dbnode.ovf dbnode-2.0.0-disk1.vmdk; do
    printf 'SHA256(%s)= %s\n' "$f" "$(sha256sum "$f" | cut -d' ' -f1)"; done ) > "$o/dbnode.mf"
chmod 0644 "$o"/*
rm -f "$d/dbnode-2.0.0.ova"
# OVF rule: the descriptor is the first member, then the disk, then the manifest.
tar --format=ustar --owner=0 --group=0 --numeric-owner --mode=0644 --mtime=@1780272000 \
    -C "$o" -cf "$d/dbnode-2.0.0.ova" dbnode.ovf dbnode-2.0.0-disk1.vmdk dbnode.mf

# --- dbnode 1.9.0: vhd (dynamic) + raw, both an empty 64 KiB disk ---
# A dynamic VHD allocates whole 2 MiB blocks, so any data would cost 2 MiB: this disk stays empty.
d=dbnode/1.9.0
rm -f "$d/dbnode-1.9.0.vhd" "$d/dbnode-1.9.0.raw"
qemu-img create -q -f raw "$d/dbnode-1.9.0.raw" 64K
qemu-img create -q -f vpc -o subformat=dynamic,force_size=on "$d/dbnode-1.9.0.vhd" 64K
# The VHD footer (at offset 0 and at the end) holds a creation timestamp and a random UUID;
# pin both and recompute the footer checksum so the file is reproducible.
python3 - "$d/dbnode-1.9.0.vhd" <<'PY'
import struct, sys, uuid
path = sys.argv[1]
data = bytearray(open(path, "rb").read())
for off in (0, len(data) - 512):
    f = data[off:off + 512]
    assert f[:8] == b"conectix"
    f[24:28] = struct.pack(">I", 0x30FAEA80)  # 2026-01-15 00:00:00 UTC, in seconds since 2000-01-01
    f[68:84] = uuid.UUID("0d5b1900-0190-4000-8000-000000000190").bytes
    f[64:68] = bytes(4)
    f[64:68] = struct.pack(">I", ~sum(f) & 0xFFFFFFFF)
    data[off:off + 512] = f
open(path, "wb").write(data)
PY

xmllint --noout "$o/dbnode.ovf"
qemu-img check -q -f vmdk "$o/dbnode-2.0.0-disk1.vmdk"
for f in */*/*.qcow2 */*/*.vmdk; do qemu-img check -q "$f"; done
ls -l */*/*.qcow2 */*/*.vmdk */*/*.vhd */*/*.raw */*/*.ova */*/*.xz
