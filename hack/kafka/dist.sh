#!/usr/bin/env bash
# Assembles a runnable Apache Kafka (broker, KRaft storage formatter, command-line tools) from
# Maven Central into DEST/libs, for `java -cp 'DEST/libs/*' <main class>`.
#
#   hack/kafka/dist.sh VERSION DEST      e.g. 4.4.0 ~/.cache/kafkachannel/kafka-4.4.0
#
# Cached: a DEST with its .complete marker is reused as is. The jars are copied into a temporary
# directory next to DEST and renamed into place only when complete, so an interrupted download
# is never taken for a finished one.
set -euo pipefail

version=${1:?usage: dist.sh VERSION DEST}
dest=${2:?usage: dist.sh VERSION DEST}
here=$(cd "$(dirname "$0")" && pwd)

if [ -f "$dest/.complete" ]; then
  echo "Apache Kafka $version: cached in $dest"
  exit 0
fi
if ! command -v java >/dev/null; then
  echo "java is not installed: Apache Kafka needs a Java 17 runtime (Debian: apt-get install openjdk-17-jre-headless)" >&2
  exit 1
fi
if ! command -v mvn >/dev/null; then
  echo "mvn is not installed: Maven assembles Apache Kafka from Maven Central (Debian: apt-get install maven)" >&2
  exit 1
fi
java_major=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
if [ "${java_major%%.*}" -lt 17 ] 2>/dev/null; then
  echo "java is version $java_major: Apache Kafka $version needs Java 17 or newer" >&2
  exit 1
fi

case "$version" in
  3.*) profile=reload4j ;;
  *) profile=log4j2 ;;
esac

mkdir -p "$(dirname "$dest")"
tmp=$(mktemp -d "$dest.partial.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
log="$tmp/maven.log"
echo "Apache Kafka $version: resolving org.apache.kafka:kafka_2.13 and kafka-tools from Maven Central (the first time takes a few minutes)"
start=$(date +%s)
# Maven's own transfer log is thousands of lines: show a line per 25 files instead.
if ! mvn -B -f "$here/pom.xml" -P "$profile" -Dkafka.version="$version" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$tmp/libs" 2>&1 |
    tee "$log" | awk '/Downloaded from/ { n++; if (n % 25 == 0) { printf "  %d files downloaded\n", n; fflush() } }'; then
  echo "Maven could not resolve Apache Kafka $version; the end of its log:" >&2
  grep -E 'ERROR|BUILD' "$log" | head -20 >&2
  exit 1
fi
n=$(find "$tmp/libs" -name '*.jar' | wc -l)
if [ ! -f "$tmp/libs/kafka_2.13-$version.jar" ]; then
  echo "Maven finished but kafka_2.13-$version.jar is not among the $n jars in $tmp/libs" >&2
  exit 1
fi
rm -f "$log"
echo "$version" >"$tmp/.complete"
# A previous interrupted run may have left an incomplete DEST (older layouts): replace it.
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "Apache Kafka $version: $n jars in $dest/libs ($(($(date +%s) - start)) s)"
