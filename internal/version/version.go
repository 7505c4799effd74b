// Package version holds the build version, stamped with -ldflags by the Makefile and Dockerfile.
package version

// Version of this build; "dev" when built without the Makefile.
var Version = "dev"
