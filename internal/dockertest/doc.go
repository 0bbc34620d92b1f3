// Package dockertest proves the container modes on a real engine (podman's
// Docker Engine API, ../shared/tools/container-engine.sh): the image of
// upgraded built from packaging/Dockerfile, three simulated cluster peers in
// containers each with an upgraded container beside it (docker runner), and
// one container running upgraded with its peer as a child (one-container
// mode). Every image is built locally; nothing is pulled. Its only test file
// drives everything.
package dockertest
