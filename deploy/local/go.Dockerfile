# The Go toolchain on the local Debian base: deploy/Dockerfile's
# BUILDER_IMAGE where golang:1.26 cannot be pulled (make compose-test; ADR
# 0018). Built with the host's Go installation (/usr/local/go) as context.
ARG BASE=orderly-local/debian:bookworm
FROM ${BASE}
COPY . /usr/local/go
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:$PATH GOTOOLCHAIN=local
WORKDIR /go
