#!/bin/sh
# Test certificates on loopback: make-certs.sh DIR
#   ca.pem                  the CA the servers trust
#   server.pem server.key   CN=localhost, SAN localhost and 127.0.0.1, signed by ca
#   client.pem client.key   CN=foreman.example.com, signed by ca
#   stranger.pem/.key       CN=stranger.example.com, signed by ca
#   rogue-ca.pem, rogue.pem/.key   CN=foreman.example.com, signed by another CA
#   expired.pem/.key        like server.pem, but its validity ended a day before it began
#   wrongname.pem/.key      CN and SAN wrong.example.com, signed by ca
#   rogue-server.pem/.key   like server.pem, signed by rogue-ca
set -eu
dir=$1
mkdir -p "$dir"
cd "$dir"
days=30

ca() { # NAME CN
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days $days \
        -subj "/CN=$2" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
}

leaf() { # NAME CN CA [SAN [DAYS]]
    openssl req -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "/CN=$2" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n%s\n' \
        "${4:+subjectAltName=$4}" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial -out "$1.pem" \
        -days "${5:-$days}" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "Test CA"
ca rogue-ca "Rogue CA"
leaf server localhost ca "DNS:localhost,IP:127.0.0.1"
leaf client foreman.example.com ca
leaf stranger stranger.example.com ca
leaf rogue foreman.example.com rogue-ca
leaf expired localhost ca "DNS:localhost,IP:127.0.0.1" -1
leaf wrongname wrong.example.com ca "DNS:wrong.example.com"
leaf rogue-server localhost rogue-ca "DNS:localhost,IP:127.0.0.1"
