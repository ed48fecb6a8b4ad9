#!/bin/bash
set -euo pipefail
tr '[:lower:]' '[:upper:]' < /app/greeting.txt > /app/answer.txt
