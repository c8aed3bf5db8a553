"""Co-branded cards: banks link card tokens to members and send card transactions that earn points."""
