"""`python -m dcnn`: the dcnn command; what ``torchrun ... -m dcnn train ...`` runs in each process."""

from dcnn.cli import main

if __name__ == "__main__":
    main()
