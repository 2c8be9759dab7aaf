"""Datasets as uint8 arrays (in memory, or memory-mapped from disk), and a deterministic batch
iterator.

    cifar10    CIFAR-10 from local files (both official layouts)
    folder     photos in class folders (image_folder), decoding (load_images)
    table      photos labelled by a CSV or a dict (labelled_images)
    store      decoded images on disk: a memmap file per set, keyed by its sources
    imageset   ImageSet and the seeded batch iterator
"""
from . import store  # noqa: F401  (gluonft.datasets.store)
from .cifar10 import DatasetNotFound, cifar10, cifar10_folder
from .folder import (
                     FolderData,
                     UnlabelledImagesWarning,
                     UnreadableImagesWarning,
                     folder_classes,
                     image_folder,
                     list_images,
                     load_images,
)
from .imageset import ImageSet, iterate_batches
from .table import TableWarning, labelled_images, read_labels

__all__ = ["ImageSet", "iterate_batches", "cifar10", "cifar10_folder", "DatasetNotFound",
           "image_folder", "folder_classes", "FolderData", "list_images", "load_images",
           "labelled_images", "read_labels", "UnreadableImagesWarning",
           "UnlabelledImagesWarning", "TableWarning"]
