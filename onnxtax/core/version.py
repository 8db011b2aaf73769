"""The release of onnxtax (also `onnxtax.__version__`); kept here so that no module of the
package reaches up to the root package for it."""

VERSION = "0.1.0"
