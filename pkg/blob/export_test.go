package blob

import "encoding/base64"

// DigestOf is the object store's digest string of data.
var DigestOf = digestOf

// MetaSubject is the subject of an object's metadata.
func MetaSubject(bucket, key string) string {
	return "$O." + bucket + ".M." + base64.URLEncoding.EncodeToString([]byte(key))
}
