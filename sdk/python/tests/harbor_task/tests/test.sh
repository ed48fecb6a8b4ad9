#!/bin/bash
# Reward 1 when the answer is right and the sandbox runs the task's own image
# (/app/built.txt comes from the Dockerfile's RUN step); 0 otherwise.
mkdir -p /logs/verifier
if [ "$(cat /app/answer.txt 2>/dev/null)" = "HELLO FROM REPOBOX" ] &&
   [ "$(cat /app/built.txt 2>/dev/null)" = "built by repobox" ] &&
   [ "$(pwd)" = /app ]; then
  echo 1 > /logs/verifier/reward.txt
else
  echo "answer: $(cat /app/answer.txt 2>&1); built: $(cat /app/built.txt 2>&1); pwd: $(pwd)"
  echo 0 > /logs/verifier/reward.txt
fi
