"""Infrastructure every feature uses: settings, device, errors, embedded assets, the model registry,
public-hosting policy and the files handed to visitors."""
