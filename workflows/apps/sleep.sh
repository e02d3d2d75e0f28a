#!/bin/sh
sleep "${1:-1}"
