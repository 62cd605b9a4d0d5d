#!/usr/bin/env bash
# Issue the certificates of the sync broker: a CA, the broker's server certificate, one client certificate per
# unit (its CN is the unit's id, which the broker uses as the MQTT user name) and headquarters' client
# certificates (CN hq-NAME). EC P-256 keys, no prompts, idempotent: what already exists and still verifies
# against the CA is left alone, so running it twice issues nothing new.
set -euo pipefail
umask 077
tmp=""
trap '[[ -z $tmp ]] || rm -rf "$tmp"' EXIT

usage() {
    cat >&2 <<'EOF'
usage: provision_device.sh ca     DIR                   a CA: DIR/ca.key (0600) and DIR/ca.crt
       provision_device.sh device DIR DEVICE_ID         a unit: DIR/devices/DEVICE_ID.{key,crt}, CN=DEVICE_ID
       provision_device.sh hq     DIR NAME              headquarters: DIR/hq/hq-NAME.{key,crt}, CN=hq-NAME
       provision_device.sh server DIR HOSTNAME_OR_IP... the broker: DIR/server/FIRST.{key,crt}, SAN IP:/DNS:
       provision_device.sh revoke DIR CN                revoke a unit's (or hq-NAME's) certificate: moves it to
                                                        DIR/revoked/, deletes its key, rewrites DIR/crl.pem
       provision_device.sh crl    DIR                   rewrite DIR/crl.pem (before CRL_DAYS run out)

DEVICE_ID and NAME: ^[a-z0-9][a-z0-9_-]{0,31}$. A DEVICE_ID may not start with "hq-" (those user names have
headquarters' rights in the broker's ACL) nor be "fleet" (alpr/fleet/... carries the fleet hot lists).
"ca" also writes an empty DIR/crl.pem: the broker's crlfile. Install crl.pem again after every revoke and
reload the broker (SIGHUP); a CRL past its next-update date makes the broker refuse every client.
Environment: CA_DAYS (default 3650), CERT_DAYS (default 825), CRL_DAYS (default 3650).
Prints the key and certificate paths on stdout, one per line (the CRL's path for revoke and crl).
EOF
    exit 2
}

die() {
    echo "provision_device.sh: $*" >&2
    exit 1
}

ID_RE='^[a-z0-9][a-z0-9_-]{0,31}$'
CA_DAYS=${CA_DAYS:-3650}
CERT_DAYS=${CERT_DAYS:-825}
CRL_DAYS=${CRL_DAYS:-3650}
[[ $CRL_DAYS =~ ^[1-9][0-9]{0,4}$ ]] || die "CRL_DAYS: expected a number of days, got '$CRL_DAYS'"
[[ $CA_DAYS =~ ^[1-9][0-9]{0,4}$ ]] || die "CA_DAYS: expected a number of days, got '$CA_DAYS'"
[[ $CERT_DAYS =~ ^[1-9][0-9]{0,4}$ ]] || die "CERT_DAYS: expected a number of days, got '$CERT_DAYS'"
command -v openssl >/dev/null || die "openssl not found (apt-get install openssl)"

[[ $# -ge 2 ]] || usage
cmd=$1
dir=$2
shift 2

ca_key=$dir/ca.key
ca_crt=$dir/ca.crt

need_ca() {
    [[ -s $ca_key && -s $ca_crt ]] || die "no CA in $dir: run 'provision_device.sh ca $dir' first"
}

# verify_existing KEY CRT: true when both exist, the certificate verifies against the CA and belongs to the key
verify_existing() {
    local key=$1 crt=$2
    [[ -s $key && -s $crt ]] || return 1
    openssl verify -CAfile "$ca_crt" "$crt" >/dev/null 2>&1 || return 1
    [[ "$(openssl pkey -in "$key" -pubout 2>/dev/null)" == "$(openssl x509 -in "$crt" -noout -pubkey 2>/dev/null)" ]]
}

# issue KEY CRT SUBJECT EXTENSIONS: a new key and a certificate signed by the CA (written atomically)
issue() {
    local key=$1 crt=$2 subj=$3 ext=$4
    # a failure in here exits the script (die); the half-made temporary folder is removed by the EXIT trap
    tmp=$(mktemp -d "$dir/.issue.XXXXXX")
    printf '%b\n' "$ext" >"$tmp/ext"
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key" -out "$tmp/csr" \
        -subj "$subj" 2>/dev/null || die "openssl could not make a key for $subj"
    openssl x509 -req -in "$tmp/csr" -CA "$ca_crt" -CAkey "$ca_key" -CAserial "$dir/ca.srl" -CAcreateserial \
        -days "$CERT_DAYS" -sha256 -extfile "$tmp/ext" -out "$tmp/crt" 2>/dev/null ||
        die "openssl could not sign the certificate for $subj"
    chmod 600 "$tmp/key"
    chmod 644 "$tmp/crt"
    mv -f "$tmp/key" "$key"
    mv -f "$tmp/crt" "$crt"
    rm -rf "$tmp"
}

# the minimal state "openssl ca" needs to keep the revocation list: DIR/.ca/{index.txt,crlnumber,openssl.cnf}
ca_db() {
    local db=$dir/.ca
    mkdir -p "$db"
    [[ -e $db/index.txt ]] || : >"$db/index.txt"
    [[ -e $db/crlnumber ]] || echo 1000 >"$db/crlnumber"
    cat >"$db/openssl.cnf" <<CNF
[ca]
default_ca = alpr
[alpr]
database = $db/index.txt
crlnumber = $db/crlnumber
certificate = $ca_crt
private_key = $ca_key
default_md = sha256
default_crl_days = $CRL_DAYS
CNF
    echo "$db/openssl.cnf"
}

write_crl() {
    local cnf
    cnf=$(ca_db)
    openssl ca -batch -config "$cnf" -gencrl -out "$dir/crl.pem.new" 2>/dev/null || die "openssl could not write the CRL"
    chmod 644 "$dir/crl.pem.new"
    mv -f "$dir/crl.pem.new" "$dir/crl.pem"
}

client_cert() {  # client_cert SUBDIR CN
    local sub=$1 cn=$2
    need_ca
    mkdir -p "$dir/$sub"
    local key=$dir/$sub/$cn.key crt=$dir/$sub/$cn.crt
    if verify_existing "$key" "$crt"; then
        echo "provision_device.sh: $crt exists and is valid, left alone" >&2
    else
        issue "$key" "$crt" "/CN=$cn" \
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
    fi
    echo "$key"
    echo "$crt"
}

case $cmd in
ca)
    [[ $# -eq 0 ]] || usage
    mkdir -p "$dir"
    if [[ -s $ca_key && -s $ca_crt ]]; then
        echo "provision_device.sh: CA $ca_crt exists, left alone" >&2
    elif [[ -e $ca_key || -e $ca_crt ]]; then
        die "$dir holds half a CA (ca.key or ca.crt missing or empty): refusing to overwrite"
    else
        tmp=$(mktemp -d "$dir/.ca.XXXXXX")
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$tmp/key" -out "$tmp/crt" \
            -days "$CA_DAYS" -sha256 -subj "/CN=alpr-edge sync CA" \
            -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
            -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null || die "openssl could not make the CA"
        chmod 600 "$tmp/key"
        chmod 644 "$tmp/crt"
        mv -f "$tmp/key" "$ca_key"
        mv -f "$tmp/crt" "$ca_crt"
        rm -rf "$tmp"
    fi
    [[ -s $dir/crl.pem ]] || write_crl
    echo "$ca_key"
    echo "$ca_crt"
    ;;
device)
    [[ $# -eq 1 ]] || usage
    id=$1
    [[ $id =~ $ID_RE ]] || die "device id '$id': expected lower-case letters, digits, - and _ (at most 32, $ID_RE)"
    [[ $id != hq-* ]] || die "device id '$id': ids starting with hq- are reserved for headquarters"
    [[ $id != fleet ]] || die "device id 'fleet' is reserved (alpr/fleet/... carries the fleet hot lists)"
    client_cert devices "$id"
    ;;
hq)
    [[ $# -eq 1 ]] || usage
    name=$1
    [[ $name =~ $ID_RE ]] || die "hq name '$name': expected lower-case letters, digits, - and _ (at most 32)"
    client_cert hq "hq-$name"
    ;;
server)
    [[ $# -ge 1 ]] || usage
    need_ca
    san=()
    for h in "$@"; do
        if [[ $h =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}$ || $h =~ ^[0-9a-fA-F:]+:[0-9a-fA-F:.]*$ ]]; then
            san+=("IP:$h")
        elif [[ $h =~ ^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$ ]]; then
            san+=("DNS:$h")
        else
            die "server name '$h': not a host name or an IP address"
        fi
    done
    host=$1
    safe=${host//:/_}
    mkdir -p "$dir/server"
    key=$dir/server/$safe.key
    crt=$dir/server/$safe.crt
    want=$(IFS=,; echo "${san[*]}")
    have=""
    if verify_existing "$key" "$crt"; then
        have=$(openssl x509 -in "$crt" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | tr -d ' ' |
            sed -e 's/IPAddress:/IP:/g')
    fi
    if [[ -n $have && $have == "$want" ]]; then
        echo "provision_device.sh: $crt exists and is valid, left alone" >&2
    else
        issue "$key" "$crt" "/CN=$host" "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
extendedKeyUsage=serverAuth\nsubjectAltName=$want"
    fi
    echo "$key"
    echo "$crt"
    ;;
revoke)
    [[ $# -eq 1 ]] || usage
    cn=$1
    [[ $cn =~ $ID_RE ]] || die "CN '$cn': expected lower-case letters, digits, - and _ (at most 32)"
    need_ca
    sub=devices
    [[ $cn != hq-* ]] || sub=hq
    crt=$dir/$sub/$cn.crt
    if [[ ! -s $crt ]]; then
        compgen -G "$dir/revoked/$cn-*.crt" >/dev/null || die "no certificate $crt to revoke"
        echo "provision_device.sh: $cn is already revoked" >&2
        echo "$dir/crl.pem"
        exit 0
    fi
    serial=$(openssl x509 -in "$crt" -noout -serial | sed 's/^serial=//')
    cnf=$(ca_db)
    if ! grep -q "^R	[^	]*	[^	]*	$serial	" "$dir/.ca/index.txt"; then
        openssl ca -batch -config "$cnf" -revoke "$crt" -crl_reason keyCompromise 2>/dev/null ||
            die "openssl could not revoke $crt"
    fi
    mkdir -p "$dir/revoked"
    mv -f "$crt" "$dir/revoked/$cn-$serial.crt"
    rm -f "$dir/$sub/$cn.key"
    write_crl
    echo "$dir/crl.pem"
    ;;
crl)
    [[ $# -eq 0 ]] || usage
    need_ca
    write_crl
    echo "$dir/crl.pem"
    ;;
*)
    usage
    ;;
esac
