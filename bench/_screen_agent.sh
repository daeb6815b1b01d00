#!/bin/sh
# A stand-in for an agent CLI in tmux, for bench/activity.py: cheap enough to
# run 200 of, drawing screens the claude recognizer (actors/_screens.py)
# knows. It draws claude's ready screen, then on each line read from the
# terminal the busy screen, on the next the ready screen again, and so on.
# The screens are the test fixtures, captured from the pinned claude CLI.
# Arguments (the claude provider kind adds some) are ignored.
root=$(cd "$(dirname "$0")/.." && pwd)
screens="$root/tests/fixtures/screens/claude"
ready=$(cat "$screens/ready.txt")
busy=$(cat "$screens/busy.txt")
stty -echo 2>/dev/null  # what is typed is not drawn: each change is one screen
draw() { printf '\033[H\033[2J%s' "$1"; }  # clear, then the screen (no final newline: no scroll)
draw "$ready"
while read -r _line; do
    draw "$busy"
    read -r _line || break
    draw "$ready"
done
