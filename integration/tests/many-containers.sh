#!/usr/bin/env bash
# Many containers at once through CRI: five overlaybd images (busybox, Debian, and three
# variants of them with one more small layer each), pulled lazily, 20 containers (4 per image,
# one pod per image, all created and started concurrently) running at the same time on five
# blockd devices. Each writes its own marker, read back through ExecSync and found in its own
# upper dir; each sees its image's extra layer. Then everything is removed through CRI: no
# snapshot, device, loop device or mount is left in the bed.
# shellcheck source=SCRIPTDIR/../lib/test.sh
source "$(dirname "$0")/../lib/test.sh"
# shellcheck source=SCRIPTDIR/../lib/lazy.sh
source "$(dirname "$0")/../lib/lazy.sh"
LAZY_PULL=cri lazy_begin

# push_variant NAME TAG: image NAME plus a layer holding /variant ("NAME:TAG"), pushed as
# dadi/NAME:TAG (its other layers are already in the registry); prints the reference.
push_variant() {
  local name=$1 tag=$2 src d=$BED_DIR/variants/$1-$2
  src=$("$DADI_REPO_DIR/integration/images/build" "$name" | awk -v n="$name" '$1 == n {print $2}')
  mkdir -p "$d/layer"
  cp -a "$src/oci" "$d/oci"
  printf '%s:%s\n' "$name" "$tag" >"$d/layer/variant"
  tar -C "$d/layer" -cf "$d/layer.tar" variant
  umoci raw add-layer --image "$d/oci:$name" --tag "$tag" --history.created_by "many-containers $tag" "$d/layer.tar"
  skopeo copy --quiet --dest-tls-verify=false "oci:$d/oci:$tag" "docker://$BED_REGISTRY/dadi/$name:$tag" >&2
  rm -rf "$d"
  echo "$BED_REGISTRY/dadi/$name:$tag"
}

# Image i: its overlaybd reference and what its containers find in /variant.
refs=() variants=()
for spec in busybox: debian: busybox:v2 busybox:v3 debian:v2; do
  name=${spec%%:*} tag=${spec#*:}
  if [ -z "$tag" ]; then
    src=$(bed_push_image "$name")
    variants+=(none)
  else
    src=$(push_variant "$name" "$tag")
    variants+=("$name:$tag")
  fi
  obd=$(lazy_convert "$src")
  refs+=("$obd")
done
for ref in "${refs[@]}"; do
  bcri pull "$ref" >/dev/null
  expect_remote_layers "$ref"
done

# One pod per image, four containers in each, all created and started at once.
mkdir -p "$BED_DIR/ids"
pods=() jobs=()
for i in "${!refs[@]}"; do
  pod=$(bcri runp "many-$i")
  pods+=("$pod")
done
for i in "${!refs[@]}"; do
  for k in 0 1 2 3; do
    n=$((i * 4 + k))
    (
      cid=$(bcri create "${pods[$i]}" "c$n" "${refs[$i]}" -- /bin/sh -c \
        "echo marker-$n > /marker; exec sleep 100000")
      echo "$cid" >"$BED_DIR/ids/$n"
      bcri start "$cid"
    ) &
    jobs+=($!)
  done
done
for j in "${jobs[@]}"; do wait "$j" || fail "a container could not be created or started (above)"; done
ids=()
for n in $(seq 0 19); do ids+=("$(cat "$BED_DIR/ids/$n")"); done

# shellcheck disable=SC2317 # called through wait_until
all_running() {
  local id
  for id in "${ids[@]}"; do cri_is "$id" RUNNING || return 1; done
}
wait_until 60 "20 containers to run" all_running ||
  fail "not all running: $(for id in "${ids[@]}"; do bcri status "$id" | jq -c '[.id[:12], .state, .exit_code]'; done)"
devices=$(findmnt -rn -o TARGET | grep -cF -- "$BED_DIR/blockd/state/mnt/" || true)
expect_eq "blockd devices mounted for 5 images" 5 "$devices"

for n in $(seq 0 19); do
  id=${ids[$n]} i=$((n / 4))
  expect_eq "c$n: its marker through ExecSync" "marker-$n" "$(bcri exec "$id" -- cat /marker)"
  variant=$(bcri exec "$id" -- /bin/sh -c 'cat /variant 2>/dev/null || echo none')
  [ "$variant" = "${variants[$i]}" ] || fail "c$n (${refs[$i]}): /variant is '$variant', expected '${variants[$i]}'"
  read -r upper lowest < <(snapshot_dirs "$id")
  [ "$(cat "$upper/marker")" = "marker-$n" ] || fail "c$n: marker not in its upper dir $upper"
  case $lowest in "$BED_DIR/blockd/state/mnt/"*) ;; *) fail "c$n: lowest lowerdir '$lowest' is not a blockd mount" ;; esac
done
cri_is "${ids[0]}" RUNNING || fail "c0 stopped while the others were checked"
log "ok: 20 containers of 5 images ran at once, each with its own marker in its own upper dir"

for id in "${ids[@]}"; do bcri stop "$id"; bcri rm "$id"; done
for pod in "${pods[@]}"; do bcri stopp "$pod"; bcri rmp "$pod"; done
for ref in "${refs[@]}" "$BED_PAUSE_IMAGE"; do bcri rmi "$ref"; done
expect_node_clean "removing everything through CRI"
# What may stay mounted while the bed runs: blockd's FUSE mount itself.
mounts=$(findmnt -rn -o TARGET | grep -F -- "$BED_DIR" | grep -vxF "$BED_DIR/blockd/state/fuse" || true)
[ -z "$mounts" ] || fail "mounts left in the bed: $mounts"
loops=$(losetup -n -l -O NAME,BACK-FILE | grep -F -- "$BED_DIR" || true)
[ -z "$loops" ] || fail "loop devices left: $loops"
log "ok: all removed through CRI: no snapshot, device, loop device or container mount left"
